//! The process's one producer for every output topic: windows, predictions, dead letters
//! and checkpoints.
//!
//! # Never dropping
//! `message.timeout.ms=0` makes librdkafka retry a record until the broker takes it, so an
//! outage delays output rather than losing it. A delivery error that retrying cannot fix
//! (a record too large, a topic the user may not write) stops the run through the failure
//! slot: continuing would silently lose data.
//!
//! # Never blocking
//! The local queue is bounded. When it is full a send hands the record back
//! ([`Sent::Full`]) and the caller keeps it for its next activation: the sinks hold their
//! capabilities (so the durable frontier stops, and the sources' pacing stops reading),
//! the sources keep their dead letters in an [`Outbox`](super::Outbox) and skip a
//! checkpoint until the next commit. No worker ever sleeps on the producer.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};

use super::acks::{Ack, DeadLetters};
use super::dead_letter::DeadLetter;
use crate::kafka::{KafkaSettings, KafkaSetupError, Topics};
use crate::worker::{FailureSlot, Fatal};

/// What became of a send.
#[derive(Debug)]
pub enum Sent<T> {
    /// librdkafka has the record; its ack settles on delivery.
    Queued,
    /// The local queue is full: here is the record back, for a later try.
    Full(T),
}

/// librdkafka callbacks of the output producer: acknowledgements settle trackers.
pub struct OutputContext {
    failure: FailureSlot,
}

impl ClientContext for OutputContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        crate::kafka::logs::log(level, fac, message);
    }
    fn error(&self, e: rdkafka::error::KafkaError, reason: &str) {
        crate::kafka::logs::error(&e, reason);
    }
}

impl ProducerContext for OutputContext {
    type DeliveryOpaque = Box<Ack>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Box<Ack>) {
        match result {
            Ok(_) => ack.settle(),
            // With infinite retries only permanent errors get here; the record is lost
            // unless the run stops, so it stops (and commits nothing past it).
            Err((error, message)) => self.failure.set(Fatal::Delivery {
                topic: message.topic().to_owned(),
                source: error.clone(),
            }),
        }
    }
}

/// The process's producer for every output topic.
pub struct KafkaOutput {
    producer: ThreadedProducer<OutputContext>,
    topics: Topics,
}

impl KafkaOutput {
    /// Creates the producer. `failure` is the run's fatal-error slot.
    pub fn connect(settings: &KafkaSettings, failure: FailureSlot) -> Result<Arc<Self>, KafkaSetupError> {
        let mut cfg = settings.client_config();
        // No duplicates or reordering from internal retries: each station's windows reach
        // the broker once and in order.
        cfg.set("enable.idempotence", "true");
        // Retry until delivered: an outage becomes backpressure, never a dropped window.
        cfg.set("message.timeout.ms", "0");
        // Feature JSON is repetitive; lz4 is the cheapest codec that still shrinks it well.
        cfg.set("compression.type", "lz4");
        // Batch for throughput; 20 ms is small against the one-minute window slide.
        cfg.set("linger.ms", "20");
        // Bound the local queue (default 1 GiB) so a slow broker slows the pipeline
        // instead of growing memory.
        cfg.set("queue.buffering.max.kbytes", "65536");
        settings.apply_user_options(&mut cfg);
        let producer =
            cfg.create_with_context(OutputContext { failure })
                .map_err(|source| KafkaSetupError::Client {
                    what: "producer",
                    brokers: settings.brokers.clone(),
                    source: Box::new(source),
                })?;
        Ok(Arc::new(KafkaOutput {
            producer,
            topics: settings.topics.clone(),
        }))
    }

    /// Records handed to librdkafka and not yet acknowledged.
    pub fn in_flight(&self) -> i32 {
        self.producer.in_flight_count()
    }

    /// Waits up to `timeout` for every queued record to be acknowledged. For the end of a
    /// run only, never on a worker that still has work.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }

    /// The topic names.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Classifies librdkafka's answer to a send.
    fn sent<T>(result: Result<(), KafkaError>, topic: &str, back: T) -> Result<Sent<T>, Fatal> {
        match result {
            Ok(()) => Ok(Sent::Queued),
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => Ok(Sent::Full(back)),
            Err(source) => Err(Fatal::Send {
                topic: topic.to_owned(),
                source,
            }),
        }
    }

    /// Sends one keyed record. On a full queue the record is not sent and `ack` is
    /// dropped: the caller keeps what it needs to try again.
    pub fn send(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: Option<OwnedHeaders>,
        ack: Box<Ack>,
    ) -> Result<Sent<()>, Fatal> {
        let mut record = BaseRecord::with_opaque_to(topic, ack).key(key).payload(payload);
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        Self::sent(self.producer.send(record).map_err(|(e, _)| e), topic, ())
    }

    /// Sends a checkpoint record (see [`super::checkpoint`]); `ack` settles when the broker
    /// has it. On a full queue the checkpoint is skipped: the next commit writes a newer one.
    pub fn send_checkpoint(&self, key: &str, value: &str, ack: Ack) -> Result<Sent<()>, Fatal> {
        let topic = &self.topics.checkpoints;
        let record = BaseRecord::with_opaque_to(topic, Box::new(ack)).key(key).payload(value);
        Self::sent(self.producer.send(record).map_err(|(e, _)| e), topic, ())
    }

    /// Sends a dead letter: the original bytes with the reason and origin as headers. On a
    /// full queue the letter comes back, to wait in the source's outbox.
    pub fn send_dead_letter(&self, letter: DeadLetter, tracker: &Arc<DeadLetters>) -> Result<Sent<DeadLetter>, Fatal> {
        let topic = &self.topics.dlq;
        let ack = Box::new(Ack::DeadLetter {
            tracker: tracker.clone(),
            partition: letter.partition,
            offset: letter.offset,
        });
        let mut record = BaseRecord::with_opaque_to(topic, ack)
            .payload(&letter.payload)
            .headers(letter.headers());
        if let Some(key) = &letter.key {
            record = record.key(key);
        }
        let result = self.producer.send(record).map_err(|(e, _)| e);
        Self::sent(result, topic, letter)
    }
}
