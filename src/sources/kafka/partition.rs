//! What the Kafka source knows about one partition: its event-time watermark, whether it
//! is idle, and which offset may be committed behind the durable frontier.
//!
//! Plain data and arithmetic, free of timely and rdkafka, so the commit rule can be tested
//! exhaustively on its own.
//!
//! # The commit rule
//! A reading at event minute `m` feeds the windows ending at `m + 1 … m + 5` minutes and,
//! through the trend, the window ending at `m + 6`. With `D` the durable frontier (every
//! window ending before `D` acknowledged by the sinks), the reading is no longer needed
//! once `m < D − 6 min`. Offset `o` of a partition may be committed when *every* reading
//! before `o` satisfies that, so the partition keeps "marks": the offsets at which its
//! largest event minute so far went up. Those are the only offsets where the prefix
//! maximum changes, so the committable offset is the first mark at or above the threshold
//! (or the end, when there is none). A snapshot of offsets at watermark time would be
//! wrong: a fast partition would commit readings a skewed slow one still needs (docs/design.md §9.4).
//!
//! The commit also records, as metadata, `D` and the partition's largest event time
//! before the offset. A restart uses them to suppress windows that were already durable
//! and to make exactly the same lateness decisions as the first run, so re-emitted
//! windows are identical to the originals.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::delivery::checkpoint::Resume;
use crate::schema::{MINUTE_MS, floor_minute};

/// How long a reading stays needed after its minute: five windows plus the trend's one.
pub const RETAIN_MS: u64 = 6 * MINUTE_MS;

/// A point where the partition's largest event minute went up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mark {
    /// The offset of the reading that raised it.
    offset: i64,
    /// Its event minute (ms).
    minute: u64,
    /// The largest event time before this reading.
    max_before: Option<u64>,
}

/// One owned partition.
#[derive(Debug)]
pub struct PartitionState {
    /// Partition id.
    pub id: i32,
    /// The offset after the last message consumed; `None` before the first.
    pub next_offset: Option<i64>,
    /// The largest event time of a valid reading so far.
    pub max_event_ms: Option<u64>,
    marks: VecDeque<Mark>,
    last_activity: Instant,
    /// The broker's high watermark from the latest statistics; `None` until known.
    pub high_watermark: Option<i64>,
    /// librdkafka's fetch position from the latest statistics.
    pub fetch_position: Option<i64>,
    /// The last offset committed, to skip commits that change nothing.
    pub committed: Option<(i64, u64)>,
}

impl PartitionState {
    /// A partition resuming at `offset` (if known) with the state of its last commit.
    pub fn new(id: i32, offset: Option<i64>, resume: Option<Resume>, now: Instant) -> Self {
        PartitionState {
            id,
            next_offset: offset,
            max_event_ms: resume.and_then(|r| r.max_event_ms),
            marks: VecDeque::new(),
            last_activity: now,
            high_watermark: None,
            fetch_position: None,
            committed: None,
        }
    }

    /// Whether the broker's log end is behind what this partition already consumed: the
    /// log was replaced (topic deleted and recreated, a broker that lost its storage) or
    /// truncated. Reading on from our offset would skip every new message below it.
    pub fn log_replaced(&self) -> bool {
        matches!((self.high_watermark, self.next_offset), (Some(high), Some(next)) if high < next)
    }

    /// Restarts the offset bookkeeping for a replaced log, read again from its beginning.
    /// Event-time state stays: the readings consumed before were real.
    pub fn restart_log(&mut self, now: Instant) {
        self.next_offset = None;
        self.marks.clear();
        self.high_watermark = None;
        self.fetch_position = None;
        self.committed = None;
        self.last_activity = now;
    }

    /// Notes that the source chose not to read this partition now (pacing): it is behind,
    /// not idle, and must keep holding the watermark back. Statistics a second old can
    /// show it caught up, so quiet time alone must not make it idle.
    pub fn hold(&mut self, now: Instant) {
        self.last_activity = now;
    }

    /// The partition's own watermark: its largest event time minus the lateness.
    pub fn watermark(&self, lateness_ms: u64) -> Option<u64> {
        self.max_event_ms.map(|m| m.saturating_sub(lateness_ms))
    }

    /// Notes a consumed message without event time (invalid, dead-lettered).
    pub fn consumed(&mut self, offset: i64, now: Instant) {
        self.next_offset = Some(offset + 1);
        self.last_activity = now;
    }

    /// Notes a valid reading at `event_ms`. Returns whether it is late against this
    /// partition's own watermark *before* the reading.
    pub fn observe(&mut self, offset: i64, event_ms: u64, lateness_ms: u64, now: Instant) -> bool {
        self.consumed(offset, now);
        let late = self.watermark(lateness_ms).is_some_and(|w| event_ms < w);
        let minute = floor_minute(event_ms);
        let prev_minute = self.max_event_ms.map(floor_minute);
        if prev_minute.is_none_or(|p| minute > p) {
            self.marks.push_back(Mark {
                offset,
                minute,
                max_before: self.max_event_ms,
            });
        }
        if self.max_event_ms.is_none_or(|m| event_ms > m) {
            self.max_event_ms = Some(event_ms);
        }
        late
    }

    /// Idle: nothing consumed for `timeout`, and the broker has nothing more (the high
    /// watermark is known and reached). A partition whose lag is unknown is not idle, so
    /// a slow first fetch cannot let other partitions' readings outrun it.
    pub fn is_idle(&self, now: Instant, timeout: Duration) -> bool {
        let caught_up = match self.high_watermark {
            Some(high) => {
                let position = self.next_offset.max(self.fetch_position).unwrap_or(i64::MIN);
                position >= high
            }
            None => false,
        };
        caught_up && now.duration_since(self.last_activity) >= timeout
    }

    /// Messages on the broker not yet consumed, when known.
    pub fn lag(&self) -> Option<u64> {
        let high = self.high_watermark?;
        let position = self.next_offset.max(self.fetch_position)?;
        Some(high.saturating_sub(position).max(0) as u64)
    }

    /// The offset that may be committed with durable frontier `durable_ms`, with its
    /// resume metadata. `None` when nothing has been consumed, or when a dead letter
    /// below that offset is still in flight (`oldest_dead_letter`): its source offset must
    /// not be committed before the broker has it, and it is acknowledged within moments,
    /// so the next commit round goes through.
    pub fn committable(&mut self, durable_ms: u64, oldest_dead_letter: Option<i64>) -> Option<(i64, Resume)> {
        let next = self.next_offset?;
        let threshold = durable_ms.saturating_sub(RETAIN_MS);
        while self.marks.front().is_some_and(|m| m.minute < threshold) {
            self.marks.pop_front();
        }
        let (offset, max_event_ms) = match self.marks.front() {
            Some(mark) => (mark.offset, mark.max_before),
            None => (next, self.max_event_ms),
        };
        if oldest_dead_letter.is_some_and(|l| l < offset) {
            return None;
        }
        Some((
            offset,
            Resume {
                durable_ms,
                max_event_ms,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u64 = MINUTE_MS;

    fn part() -> (PartitionState, Instant) {
        let now = Instant::now();
        (PartitionState::new(0, None, None, now), now)
    }

    #[test]
    fn commits_only_readings_no_window_needs() {
        let (mut p, now) = part();
        // Offsets 0..10 at minutes 0..10, one reading each, 30 s into the minute.
        for o in 0..10 {
            assert!(!p.observe(o, o as u64 * M + 30_000, 10_000, now));
        }
        assert_eq!(p.committable(0, None).map(|c| c.0), Some(0));
        // D = 7 min: minute 0 is done (0 < 7 − 6), minute 1 is not.
        let (offset, resume) = p.committable(7 * M, None).unwrap();
        assert_eq!(offset, 1);
        assert_eq!(resume.max_event_ms, Some(30_000));
        assert_eq!(resume.durable_ms, 7 * M);
        // Everything durable: commit the end, with the full max.
        let (offset, resume) = p.committable(u64::MAX, None).unwrap();
        assert_eq!(offset, 10);
        assert_eq!(resume.max_event_ms, Some(9 * M + 30_000));
    }

    #[test]
    fn a_late_straggler_does_not_move_the_marks_but_skew_holds_commits() {
        let (mut p, now) = part();
        p.observe(0, 5 * M, 10_000, now); // minute 5
        p.observe(1, 2 * M, 10_000, now); // older: late against 5 min − 10 s
        p.observe(2, 6 * M, 10_000, now);
        // D = 12 min: threshold 6 min, minute 5 done; the straggler (minute 2) is too.
        assert_eq!(p.committable(12 * M, None).map(|c| c.0), Some(2));
        // The out-of-order reading is reported late.
        let (mut q, now) = part();
        q.observe(0, 5 * M, 10_000, now);
        assert!(q.observe(1, 5 * M - 10_001, 10_000, now));
        assert!(!q.observe(2, 5 * M - 10_000, 10_000, now));
    }

    #[test]
    fn a_dead_letter_in_flight_blocks_the_commit_past_it() {
        let (mut p, now) = part();
        p.observe(0, M, 0, now);
        p.consumed(1, now);
        p.observe(2, 2 * M, 0, now);
        assert_eq!(p.committable(u64::MAX, Some(1)), None);
        assert_eq!(p.committable(u64::MAX, Some(3)).map(|c| c.0), Some(3));
        assert_eq!(p.committable(u64::MAX, None).map(|c| c.0), Some(3));
    }

    #[test]
    fn restored_state_gives_the_same_lateness_decisions() {
        let now = Instant::now();
        let resume = Resume {
            durable_ms: 20 * M,
            max_event_ms: Some(15 * M),
        };
        let mut p = PartitionState::new(0, Some(100), Some(resume), now);
        assert!(p.observe(100, 15 * M - 20_000, 10_000, now));
        assert!(!p.observe(101, 15 * M - 5_000, 10_000, now));
        // Re-committing an untouched partition keeps its offset.
        let fresh = PartitionState::new(1, Some(50), Some(resume), now).committable(30 * M, None);
        assert_eq!(fresh.map(|c| (c.0, c.1.max_event_ms)), Some((50, Some(15 * M))));
    }

    #[test]
    fn idle_needs_quiet_and_a_known_end() {
        let (mut p, now) = part();
        let later = now + Duration::from_secs(31);
        let timeout = Duration::from_secs(30);
        assert!(!p.is_idle(later, timeout), "lag unknown");
        p.high_watermark = Some(5);
        p.fetch_position = Some(5);
        assert!(p.is_idle(later, timeout));
        assert!(!p.is_idle(now, timeout), "not quiet long enough");
        p.high_watermark = Some(9);
        assert!(!p.is_idle(later, timeout), "more on the broker");
        assert_eq!(p.lag(), Some(4));
    }
}
