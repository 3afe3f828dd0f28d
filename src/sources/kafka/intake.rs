//! Where one message goes: a valid, timely reading into the batch; a late one counted and
//! dropped; an invalid one into the dead-letter outbox. Everything is counted.

use std::sync::Arc;
use std::time::Instant;

use rdkafka::Message;
use rdkafka::message::BorrowedMessage;

use super::partition::PartitionState;
use crate::delivery::{DeadLetter, Outbox};
use crate::metrics::SourceTally;
use crate::schema::{Invalid, InvalidReason, Reading, floor_minute, parse_json};

/// The rules of one activation.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// The worker's watermark at the start of the activation.
    pub watermark: u64,
    /// Readings before this minute only feed windows an earlier run made durable.
    pub resume_skip: u64,
    /// Readings stamped after this are dead-lettered as `future_timestamp`.
    pub future_limit: u64,
    /// Allowed lateness, ms.
    pub lateness_ms: u64,
}

/// Where an activation's messages end up.
pub struct Intake<'a> {
    /// Valid readings for the dataflow.
    pub batch: &'a mut Vec<Reading>,
    /// Invalid messages for the dead-letter topic.
    pub outbox: &'a mut Outbox,
    /// Counts.
    pub tally: &'a mut SourceTally,
    /// The raw topic's name, shared by every letter.
    pub topic: &'a Arc<str>,
}

impl Intake<'_> {
    /// Validates one message into the batch, or dead-letters it.
    pub fn take(&mut self, rules: Rules, message: &BorrowedMessage<'_>, parts: &mut [PartitionState]) {
        let partition = message.partition();
        let offset = message.offset();
        let Some(state) = parts.iter_mut().find(|p| p.id == partition) else {
            return;
        };
        let now = Instant::now();
        let payload = message.payload().unwrap_or(&[]);
        self.tally.bytes += payload.len() as u64;
        // Sequence for duplicate resolution: the first copy in a partition's order wins,
        // and the result is the same on every replay.
        let seq = ((offset.max(0) as u64) << 12) | (partition as u64 & 0xfff);
        let parsed = parse_json(payload, seq).and_then(|r| {
            (r.timestamp_ms <= rules.future_limit)
                .then_some(r)
                .ok_or(Invalid::new(InvalidReason::FutureTimestamp, "timestamp"))
        });
        match parsed {
            Ok(reading) => {
                let late = state.observe(offset, reading.timestamp_ms, rules.lateness_ms, now);
                if late || reading.timestamp_ms < rules.watermark {
                    self.tally.late += 1;
                } else if floor_minute(reading.timestamp_ms) >= rules.resume_skip {
                    self.batch.push(reading);
                }
            }
            Err(invalid) => {
                state.consumed(offset, now);
                self.tally.reject(invalid.reason);
                self.outbox.push(DeadLetter::new(
                    message.key(),
                    payload,
                    invalid.reason.as_str(),
                    self.topic.clone(),
                    partition,
                    offset,
                ));
            }
        }
    }
}
