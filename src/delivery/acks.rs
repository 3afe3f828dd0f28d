//! Delivery bookkeeping between librdkafka's callback thread and the timely workers.
//!
//! Each record sent carries a boxed [`Ack`]; the producer's delivery callback settles it.
//! The trackers are tiny mutex-guarded maps touched once per record: no worker ever waits
//! on the callback thread for longer than one map update.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rustc_hash::FxHashMap;
use timely::scheduling::SyncActivator;

use crate::metrics::Metrics;

/// What a delivered record settles.
pub enum Ack {
    /// One window record at this timely time.
    Window {
        /// The sink's tracker.
        tracker: Arc<WindowAcks>,
        /// The window's time.
        time: u64,
    },
    /// One dead letter from this source partition and offset.
    DeadLetter {
        /// The source's tracker.
        tracker: Arc<DeadLetters>,
        /// Source partition.
        partition: i32,
        /// Source offset.
        offset: i64,
    },
    /// A checkpoint record of a source partition. Once the broker has it, the group
    /// offset may follow (never before: a restart must find the state for its offset).
    Checkpoint {
        /// The source's tracker.
        tracker: Arc<Checkpoints>,
        /// Source partition.
        partition: i32,
        /// The checkpointed offset.
        offset: i64,
        /// Its commit metadata.
        metadata: String,
    },
}

impl Ack {
    /// Marks the record delivered.
    pub fn settle(self) {
        match self {
            Ack::Window { tracker, time } => tracker.settle(time),
            Ack::DeadLetter {
                tracker,
                partition,
                offset,
            } => tracker.settle(partition, offset),
            Ack::Checkpoint {
                tracker,
                partition,
                offset,
                metadata,
            } => tracker.settle(partition, offset, metadata),
        }
    }
}

/// Locks, ignoring poison: every update below leaves the map consistent at each step, so
/// a panic elsewhere cannot have left it half-changed.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Unacknowledged window records of one sink operator, by time, with when the first
/// record of each time was handed over (for the emit-to-acknowledgement latency).
pub struct WindowAcks {
    outstanding: Mutex<BTreeMap<u64, (usize, Instant)>>,
    wake: SyncActivator,
    metrics: Arc<Metrics>,
}

impl WindowAcks {
    /// A tracker that wakes the sink operator through `wake` when a time settles.
    pub fn new(wake: SyncActivator, metrics: Arc<Metrics>) -> Self {
        WindowAcks {
            outstanding: Mutex::new(BTreeMap::new()),
            wake,
            metrics,
        }
    }

    /// Counts `n` more records at `time`.
    pub fn add(&self, time: u64, n: usize) {
        lock(&self.outstanding).entry(time).or_insert((0, Instant::now())).0 += n;
    }

    fn settle(&self, time: u64) {
        let mut map = lock(&self.outstanding);
        let emptied = match map.get_mut(&time) {
            Some((n, _)) if *n > 1 => {
                *n -= 1;
                None
            }
            Some(_) => map.remove(&time).map(|(_, since)| since),
            None => None,
        };
        drop(map);
        self.metrics.add_acked(1);
        if let Some(since) = emptied {
            self.metrics.ack_latency().record(since.elapsed());
            // The worker may be parked; an error only means the dataflow is gone.
            let _ = self.wake.activate();
        }
    }

    /// Forgets every count: the producer was recreated, and the sender counts again what
    /// it sends again.
    pub fn reset(&self) {
        lock(&self.outstanding).clear();
    }

    /// Whether every record counted at `time` has been acknowledged.
    pub fn is_settled(&self, time: u64) -> bool {
        !lock(&self.outstanding).contains_key(&time)
    }
}

/// Dead letters in flight, by source partition and offset. The source may not commit a
/// partition past its oldest unacknowledged dead letter.
#[derive(Default)]
pub struct DeadLetters {
    outstanding: Mutex<FxHashMap<i32, BTreeSet<i64>>>,
}

impl DeadLetters {
    /// Records a dead letter as sent.
    pub fn add(&self, partition: i32, offset: i64) {
        lock(&self.outstanding).entry(partition).or_default().insert(offset);
    }

    fn settle(&self, partition: i32, offset: i64) {
        if let Some(set) = lock(&self.outstanding).get_mut(&partition) {
            set.remove(&offset);
        }
    }

    /// Whether the letter at `partition`/`offset` is still unacknowledged.
    pub fn is_outstanding(&self, partition: i32, offset: i64) -> bool {
        lock(&self.outstanding)
            .get(&partition)
            .is_some_and(|s| s.contains(&offset))
    }

    /// The oldest unacknowledged dead letter of `partition`.
    pub fn oldest(&self, partition: i32) -> Option<i64> {
        lock(&self.outstanding).get(&partition).and_then(|s| s.first().copied())
    }
}

/// Checkpoints the broker has acknowledged and the group offsets do not reflect yet.
#[derive(Default)]
pub struct Checkpoints {
    acked: Mutex<FxHashMap<i32, (i64, String)>>,
}

impl Checkpoints {
    fn settle(&self, partition: i32, offset: i64, metadata: String) {
        let mut acked = lock(&self.acked);
        // Acknowledgements of one key arrive in order; keep the newest regardless.
        if acked.get(&partition).is_none_or(|(o, _)| *o <= offset) {
            acked.insert(partition, (offset, metadata));
        }
    }

    /// Takes the acknowledged checkpoints, for a group commit.
    pub fn take(&self) -> Vec<(i32, i64, String)> {
        lock(&self.acked).drain().map(|(p, (o, m))| (p, o, m)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_track_the_oldest_offset() {
        let t = Arc::new(DeadLetters::default());
        t.add(1, 10);
        t.add(1, 5);
        t.add(2, 7);
        assert_eq!(t.oldest(1), Some(5));
        Ack::DeadLetter {
            tracker: t.clone(),
            partition: 1,
            offset: 5,
        }
        .settle();
        assert_eq!(t.oldest(1), Some(10));
        assert_eq!(t.oldest(2), Some(7));
        assert_eq!(t.oldest(3), None);
    }
}
