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
//!
//! # Recreating the producer
//! An idempotent producer cannot go on after its broker lost its log (a broker restarted
//! without its storage): the broker no longer knows its producer id and sequence numbers,
//! and librdkafka retries forever, unacknowledged. The run notices output that stays
//! unacknowledged while the brokers answer ([`crate::kafka::watch::OutputStall`]) and calls
//! [`KafkaOutput::recreate`]: a new producer, with a new identity, takes over, and the old
//! one is purged. Each producer belongs to a *generation*; acknowledgements of an older
//! generation settle nothing, so the trackers count only what the new producer delivers.
//! Every sender keeps what it sent until it is acknowledged and, woken by the
//! recreation, sends it again: windows and predictions from the sinks' retained records,
//! dead letters from the sources' outboxes, checkpoints at the next commit. Nothing is
//! lost beyond what the broker itself lost; a record the old producer did deliver may be
//! written twice, identical, which consumers that upsert by key and window end ignore.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use timely::scheduling::SyncActivator;

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
    /// This producer's generation.
    generation: u64,
    /// The current generation: callbacks of an older producer settle nothing.
    current: Arc<AtomicU64>,
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
        if self.generation != self.current.load(Ordering::Acquire) {
            // A replaced producer: its records are sent again by the new one, and its
            // purge fails every record it still held. Neither may touch the trackers.
            return;
        }
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
    producer: RwLock<ThreadedProducer<OutputContext>>,
    generation: Arc<AtomicU64>,
    settings: KafkaSettings,
    failure: FailureSlot,
    /// The operators to wake when the producer is recreated, so they send again.
    wakers: Mutex<Vec<SyncActivator>>,
    topics: Topics,
}

impl KafkaOutput {
    /// Creates the producer. `failure` is the run's fatal-error slot.
    pub fn connect(settings: &KafkaSettings, failure: FailureSlot) -> Result<Arc<Self>, KafkaSetupError> {
        let generation = Arc::new(AtomicU64::new(0));
        let producer = Self::create(settings, &failure, 0, &generation)?;
        Ok(Arc::new(KafkaOutput {
            producer: RwLock::new(producer),
            generation,
            settings: settings.clone(),
            failure,
            wakers: Mutex::default(),
            topics: settings.topics.clone(),
        }))
    }

    fn create(
        settings: &KafkaSettings,
        failure: &FailureSlot,
        generation: u64,
        current: &Arc<AtomicU64>,
    ) -> Result<ThreadedProducer<OutputContext>, KafkaSetupError> {
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
        let context = OutputContext {
            failure: failure.clone(),
            generation,
            current: current.clone(),
        };
        cfg.create_with_context(context)
            .map_err(|source| KafkaSetupError::Client {
                what: "producer",
                brokers: settings.brokers.clone(),
                source: Box::new(source),
            })
    }

    /// The producer, for one call. A poisoned lock only means a panic elsewhere while it
    /// was held; the producer behind it is whole.
    fn producer(&self) -> std::sync::RwLockReadGuard<'_, ThreadedProducer<OutputContext>> {
        self.producer.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The current producer's generation; it changes when [`recreate`](Self::recreate)
    /// replaces the producer, and senders then send again what is unacknowledged.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Wakes `waker`'s operator whenever the producer is recreated.
    pub fn on_recreate(&self, waker: SyncActivator) {
        self.wakers.lock().unwrap_or_else(|p| p.into_inner()).push(waker);
    }

    /// Replaces the producer with a new one (a new idempotent identity), purges the old
    /// one, and wakes every registered sender to send its unacknowledged records again.
    /// Called by the run loop, never by a worker: dropping the old producer may wait up to
    /// half a second for its purge.
    pub fn recreate(&self) -> Result<(), KafkaSetupError> {
        let next = self.generation() + 1;
        let fresh = Self::create(&self.settings, &self.failure, next, &self.generation)?;
        let old = {
            let mut slot = self.producer.write().unwrap_or_else(|p| p.into_inner());
            // From here on, the old producer's callbacks settle nothing.
            self.generation.store(next, Ordering::Release);
            std::mem::replace(&mut *slot, fresh)
        };
        drop(old);
        for waker in self.wakers.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            // An error only means that operator's dataflow is gone.
            let _ = waker.activate();
        }
        Ok(())
    }

    /// Records handed to librdkafka and not yet acknowledged.
    pub fn in_flight(&self) -> i32 {
        self.producer().in_flight_count()
    }

    /// Waits up to `timeout` for every queued record to be acknowledged. For the end of a
    /// run only, never on a worker that still has work.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer().flush(timeout)
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
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
        ack: Box<Ack>,
    ) -> Result<Sent<()>, Fatal> {
        let mut record = BaseRecord::with_opaque_to(topic, ack).key(key);
        // No payload is a tombstone: compaction then forgets the key.
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        Self::sent(self.producer().send(record).map_err(|(e, _)| e), topic, ())
    }

    /// Sends a checkpoint record (see [`super::checkpoint`]); `ack` settles when the broker
    /// has it. On a full queue the checkpoint is skipped: the next commit writes a newer one.
    pub fn send_checkpoint(&self, key: &str, value: &str, ack: Ack) -> Result<Sent<()>, Fatal> {
        let topic = &self.topics.checkpoints;
        let record = BaseRecord::with_opaque_to(topic, Box::new(ack)).key(key).payload(value);
        Self::sent(self.producer().send(record).map_err(|(e, _)| e), topic, ())
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
        let result = self.producer().send(record).map_err(|(e, _)| e);
        Self::sent(result, topic, letter)
    }
}
