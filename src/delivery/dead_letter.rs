//! Dead letters: invalid raw messages, kept whole (or their head) with the reason.
//!
//! A dead letter is owned from the moment it is rejected until the producer takes it:
//! the source's message buffer is gone by the next poll, and the producer's queue may be
//! full (a broker outage). Letters wait in an [`Outbox`] that the source drains on every
//! activation; while it is over [`OUTBOX_MAX_BYTES`] the source reads no more, so an
//! outage slows reading instead of growing memory. Letters handed to the producer stay
//! in the outbox until the broker acknowledges them, so that a recreated producer
//! ([`KafkaOutput::recreate`]) can send them again.

use std::collections::VecDeque;
use std::sync::Arc;

use rdkafka::message::{Header, OwnedHeaders};

use super::acks::DeadLetters;
use super::producer::{KafkaOutput, Sent};
use crate::worker::Fatal;

/// Dead letters larger than this keep only their first [`DEAD_LETTER_HEAD_BYTES`] and an
/// `original_bytes` header: well under the 1 MiB default limit of a Kafka topic, while
/// every message that failed only for its size (over 64 KiB) up to here stays whole.
///
/// Why it matters: a raw topic may accept messages larger than the dead-letter topic (or
/// this producer) does. Sending such a one whole would fail permanently, stop the run,
/// and stop every restart at the same offset: a crash loop on one message.
pub const DEAD_LETTER_MAX_BYTES: usize = 512 << 10;
/// How much of a truncated dead letter is kept: enough to see what it was.
pub const DEAD_LETTER_HEAD_BYTES: usize = 64 << 10;
/// Above this many bytes of waiting letters the source stops reading.
pub const OUTBOX_MAX_BYTES: usize = 8 << 20;

/// An invalid raw message on its way to the dead-letter topic.
#[derive(Clone, Debug)]
pub struct DeadLetter {
    /// The original key, if any.
    pub key: Option<Vec<u8>>,
    /// The original bytes, or their head when over [`DEAD_LETTER_MAX_BYTES`].
    pub payload: Vec<u8>,
    /// Why it was rejected (an `InvalidReason` name).
    pub reason: &'static str,
    /// Where it came from.
    pub topic: Arc<str>,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// The original size when the payload was truncated.
    pub original_bytes: Option<usize>,
}

impl DeadLetter {
    /// A letter for `payload`, truncated to its head when it is huge.
    pub fn new(
        key: Option<&[u8]>,
        payload: &[u8],
        reason: &'static str,
        topic: Arc<str>,
        partition: i32,
        offset: i64,
    ) -> DeadLetter {
        let (payload, original_bytes) = if payload.len() > DEAD_LETTER_MAX_BYTES {
            (&payload[..DEAD_LETTER_HEAD_BYTES], Some(payload.len()))
        } else {
            (payload, None)
        };
        DeadLetter {
            key: key.map(<[u8]>::to_vec),
            payload: payload.to_vec(),
            reason,
            topic,
            partition,
            offset,
            original_bytes,
        }
    }

    /// The headers: `reason`, `source_topic`, `source_partition`, `source_offset`, and
    /// `original_bytes` when truncated.
    pub fn headers(&self) -> OwnedHeaders {
        let mut headers = OwnedHeaders::new_with_capacity(5)
            .insert(Header {
                key: "reason",
                value: Some(self.reason),
            })
            .insert(Header {
                key: "source_topic",
                value: Some(self.topic.as_ref()),
            })
            .insert(Header {
                key: "source_partition",
                value: Some(&self.partition.to_string()),
            })
            .insert(Header {
                key: "source_offset",
                value: Some(&self.offset.to_string()),
            });
        if let Some(size) = self.original_bytes {
            headers = headers.insert(Header {
                key: "original_bytes",
                value: Some(&size.to_string()),
            });
        }
        headers
    }
}

/// Dead letters of one source waiting for the producer, oldest first, and those sent but
/// not yet acknowledged.
#[derive(Default)]
pub struct Outbox {
    waiting: VecDeque<DeadLetter>,
    sent: Vec<DeadLetter>,
    bytes: usize,
    tracker: Arc<DeadLetters>,
    generation: u64,
}

impl Outbox {
    /// The tracker of letters sent and not yet acknowledged (for the commit rule).
    pub fn tracker(&self) -> &Arc<DeadLetters> {
        &self.tracker
    }

    /// Queues a letter. From now on its partition does not commit past its offset until
    /// the broker acknowledges it.
    pub fn push(&mut self, letter: DeadLetter) {
        self.tracker.add(letter.partition, letter.offset);
        self.bytes += letter.payload.len();
        self.waiting.push_back(letter);
    }

    /// Hands waiting letters to the producer until its queue is full. Never blocks. After
    /// the producer was recreated, the letters it had not acknowledged go first.
    pub fn flush(&mut self, output: &KafkaOutput) -> Result<(), Fatal> {
        let tracker = &self.tracker;
        self.sent.retain(|l| tracker.is_outstanding(l.partition, l.offset));
        if output.generation() != self.generation {
            self.generation = output.generation();
            for letter in self.sent.drain(..).rev() {
                self.bytes += letter.payload.len();
                self.waiting.push_front(letter);
            }
        }
        while let Some(letter) = self.waiting.pop_front() {
            let size = letter.payload.len();
            match output.send_dead_letter(letter.clone(), &self.tracker)? {
                Sent::Queued => {
                    self.bytes -= size;
                    self.sent.push(letter);
                }
                Sent::Full(letter) => {
                    self.waiting.push_front(letter);
                    break;
                }
            }
        }
        Ok(())
    }

    /// Letters still waiting.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether none are waiting.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Whether the source should stop reading until the producer takes more.
    pub fn is_full(&self) -> bool {
        self.bytes > OUTBOX_MAX_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_letters_keep_their_head_and_say_so() {
        let topic: Arc<str> = Arc::from("weather-raw");
        let big = vec![b'x'; DEAD_LETTER_MAX_BYTES + 1];
        let letter = DeadLetter::new(None, &big, "too_large", topic.clone(), 3, 9);
        assert_eq!(letter.payload.len(), DEAD_LETTER_HEAD_BYTES);
        assert_eq!(letter.original_bytes, Some(DEAD_LETTER_MAX_BYTES + 1));
        let small = DeadLetter::new(Some(b"k"), b"{}", "malformed", topic, 3, 10);
        assert_eq!(small.payload, b"{}");
        assert_eq!(small.original_bytes, None);
        let mut outbox = Outbox::default();
        outbox.push(letter);
        outbox.push(small);
        assert_eq!(outbox.tracker().oldest(3), Some(9));
        assert_eq!(outbox.len(), 2);
        assert!(!outbox.is_full());
    }
}
