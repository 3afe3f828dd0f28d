//! Checking, off the worker, whether a partition's log was replaced, and rewinding it.
//!
//! Statistics a second old often show a log end below what was consumed since, so a
//! suspected replacement is confirmed with a fresh answer from the broker, and a confirmed
//! one is rewound to the log's beginning. Both are requests that can block for seconds
//! (longer while the broker is away), so they run on a thread of their own. The worker
//! sends a request, stops reading that partition (it is held, not idle) and picks the
//! answer up on a later activation; the checker wakes it when the answer is in.

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::Offset;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rustc_hash::FxHashSet;
use timely::scheduling::SyncActivator;

use super::client::SourceClient;

/// How long one request may wait for the broker.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The answer about one partition.
#[derive(Debug)]
pub enum Verdict {
    /// The log is intact; its end is `high`.
    Intact {
        /// The partition.
        partition: i32,
        /// The log end the broker gave.
        high: i64,
    },
    /// The broker did not answer in time: nothing is known yet.
    Unanswered {
        /// The partition.
        partition: i32,
    },
    /// The log was replaced and the consumer now reads it from its beginning.
    Rewound {
        /// The partition.
        partition: i32,
        /// The log end that confirmed it.
        high: i64,
    },
    /// The log was replaced and could not be rewound.
    RewindFailed {
        /// The partition.
        partition: i32,
        /// librdkafka's error.
        error: KafkaError,
    },
}

impl Verdict {
    /// The partition the answer is about.
    pub fn partition(&self) -> i32 {
        match self {
            Verdict::Intact { partition, .. }
            | Verdict::Unanswered { partition }
            | Verdict::Rewound { partition, .. }
            | Verdict::RewindFailed { partition, .. } => *partition,
        }
    }
}

/// A worker's handle on its checker thread.
pub struct LogChecks {
    requests: Option<Sender<(i32, i64)>>,
    answers: Receiver<Verdict>,
    pending: FxHashSet<i32>,
    thread: Option<JoinHandle<()>>,
}

impl LogChecks {
    /// Starts the checker for `topic` on `consumer`; `wake` activates the source when an
    /// answer is in.
    pub fn start(
        consumer: Arc<BaseConsumer<SourceClient>>,
        topic: String,
        wake: SyncActivator,
    ) -> std::io::Result<Self> {
        let (requests, inbox) = mpsc::channel::<(i32, i64)>();
        let (outbox, answers) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("kafka-log-check".into())
            .spawn(move || {
                // Ends when the worker drops its sender.
                while let Ok((partition, position)) = inbox.recv() {
                    let verdict = check(&consumer, &topic, partition, position);
                    if outbox.send(verdict).is_err() {
                        break;
                    }
                    let _ = wake.activate();
                }
            })?;
        Ok(LogChecks {
            requests: Some(requests),
            answers,
            pending: FxHashSet::default(),
            thread: Some(thread),
        })
    }

    /// Asks about `partition`, whose consumed position is `position`, unless a question
    /// about it is already out.
    pub fn request(&mut self, partition: i32, position: i64) {
        if let Some(requests) = &self.requests
            && self.pending.insert(partition)
            && requests.send((partition, position)).is_err()
        {
            // The thread is gone (it only ends with the worker): treat as unanswered.
            self.pending.remove(&partition);
        }
    }

    /// Whether a question about `partition` is out: the source does not read it meanwhile.
    pub fn is_pending(&self, partition: i32) -> bool {
        self.pending.contains(&partition)
    }

    /// The answers that arrived, without waiting.
    pub fn answers(&mut self) -> Vec<Verdict> {
        let mut out = Vec::new();
        loop {
            match self.answers.try_recv() {
                Ok(verdict) => {
                    self.pending.remove(&verdict.partition());
                    out.push(verdict);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return out,
            }
        }
    }
}

impl Drop for LogChecks {
    fn drop(&mut self) {
        // Closing the channel ends the thread after its current request; it is not joined
        // here, so a worker that stops never waits for a broker that does not answer.
        self.requests = None;
        drop(self.thread.take());
    }
}

fn check(consumer: &BaseConsumer<SourceClient>, topic: &str, partition: i32, position: i64) -> Verdict {
    let high = match consumer.fetch_watermarks(topic, partition, REQUEST_TIMEOUT) {
        Ok((_, high)) => high,
        Err(_) => return Verdict::Unanswered { partition },
    };
    if high >= position {
        return Verdict::Intact { partition, high };
    }
    match consumer.seek(topic, partition, Offset::Beginning, REQUEST_TIMEOUT) {
        Ok(()) => Verdict::Rewound { partition, high },
        Err(error) => Verdict::RewindFailed { partition, error },
    }
}
