//! Kafka output: weather-features (and, with the ML stage, weather-predictions) plus the
//! dead-letter topic, through one idempotent producer per process.
//!
//! # The durable frontier
//! The sink holds a capability for every window time `E` it has sent until librdkafka has
//! acknowledged every record of `E`. Its (data-less) output stream therefore has the
//! *durable* frontier: a time has passed it only when everything at that time is in the
//! broker. The Kafka source reads that frontier through a probe to decide which offsets
//! it may commit (see `sources::kafka`), so offsets never run ahead of acknowledged output.
//!
//! # Never dropping
//! `message.timeout.ms=0` makes librdkafka retry a record until the broker takes it, so an
//! outage delays output rather than losing it. When the local queue is full the sink keeps
//! the rest of its batch, holds its capabilities and tries again shortly: the durable
//! frontier stops, the sources' pacing (`--max-ahead`) stops reading, and memory
//! stays bounded. A delivery error that retrying cannot fix (a record too large, a topic
//! the user may not write) stops the run: continuing would silently lose data.

mod acks;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

pub use acks::{Ack, Checkpoints, DeadLetters, WindowAcks};

use crate::kafka::{KafkaSettings, KafkaSetupError, Topics};
use crate::schema::{Prediction, WindowFeatures, format_rfc3339};
use crate::sources::SourceContext;

/// librdkafka callbacks of the output producer: acknowledgements settle trackers.
pub struct OutputContext {
    failure: Arc<OnceLock<String>>,
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
            Err((error, message)) => {
                // With infinite retries only permanent errors get here; the record is
                // lost unless the run stops, so it stops (and commits nothing past it).
                let text = format!("kafka: delivery to {} failed permanently: {error}", message.topic());
                // The first failure stops the run; the rest (a purge at exit fails every
                // queued record) would only flood the log.
                if self.failure.set(text.clone()).is_ok() {
                    tracing::error!(error = %text, "fatal");
                } else {
                    tracing::debug!(error = %text, "delivery failed after the run had failed");
                }
            }
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
    pub fn connect(settings: &KafkaSettings, failure: Arc<OnceLock<String>>) -> Result<Arc<Self>, KafkaSetupError> {
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

    /// Waits up to `timeout` for every queued record to be acknowledged.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }

    /// The topic names.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Sends one record; on a full queue hands the record's parts back for a later retry.
    fn send(&self, topic: &str, record: Outgoing, ack: Box<Ack>) -> Result<(), SendFailure> {
        let mut base = BaseRecord::with_opaque_to(topic, ack)
            .key(record.key.as_bytes())
            .payload(&record.payload);
        if let Some(headers) = record.headers.clone() {
            base = base.headers(headers);
        }
        // The rejected record (and its ack) is dropped here; `record` is kept for a retry.
        let result = self.producer.send(base).map_err(|(e, _)| e);
        match result {
            Ok(()) => Ok(()),
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => Err(SendFailure::Full(record)),
            Err(e) => Err(SendFailure::Fatal(format!("kafka: cannot send to {topic}: {e}"))),
        }
    }

    /// Sends a checkpoint record (see `sources::kafka::checkpoint`), waiting out a full
    /// queue: checkpoints are a few per second. `ack` settles when the broker has it.
    pub fn send_checkpoint(&self, key: &str, value: &str, ack: impl Fn() -> Ack) -> Result<(), String> {
        loop {
            let record = BaseRecord::with_opaque_to(&self.topics.checkpoints, Box::new(ack()))
                .key(key)
                .payload(value);
            match self.producer.send(record).map_err(|(e, _)| e) {
                Ok(()) => return Ok(()),
                Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(format!("kafka: cannot send to {}: {e}", self.topics.checkpoints)),
            }
        }
    }

    /// Sends a dead letter: the original bytes with the reason and origin as headers. A
    /// full queue is waited out here: dead letters are rare, and their source offsets must
    /// not be committed before they are in the broker.
    pub fn send_dead_letter(&self, letter: DeadLetter<'_>, tracker: &Arc<DeadLetters>) -> Result<(), String> {
        // A raw topic may accept messages larger than the dead-letter topic (or this
        // producer) does. Sending such a one whole would fail permanently, stop the run,
        // and stop every restart at the same offset: a crash loop on one message. So a
        // huge dead letter keeps only its head, and says so.
        let (payload, truncated) = if letter.payload.len() > DEAD_LETTER_MAX_BYTES {
            (
                &letter.payload[..DEAD_LETTER_HEAD_BYTES],
                Some(letter.payload.len().to_string()),
            )
        } else {
            (letter.payload, None)
        };
        let mut headers = OwnedHeaders::new_with_capacity(5)
            .insert(Header {
                key: "reason",
                value: Some(letter.reason),
            })
            .insert(Header {
                key: "source_topic",
                value: Some(letter.topic),
            })
            .insert(Header {
                key: "source_partition",
                value: Some(&letter.partition.to_string()),
            })
            .insert(Header {
                key: "source_offset",
                value: Some(&letter.offset.to_string()),
            });
        if let Some(size) = &truncated {
            headers = headers.insert(Header {
                key: "original_bytes",
                value: Some(size),
            });
        }
        tracker.add(letter.partition, letter.offset);
        loop {
            let mut record = BaseRecord::with_opaque_to(
                &self.topics.dlq,
                Box::new(Ack::DeadLetter {
                    tracker: tracker.clone(),
                    partition: letter.partition,
                    offset: letter.offset,
                }),
            )
            .payload(payload)
            .headers(headers.clone());
            if let Some(key) = letter.key {
                record = record.key(key);
            }
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(format!("kafka: cannot send to {}: {e}", self.topics.dlq)),
            }
        }
    }
}

/// Dead letters larger than this keep only their first [`DEAD_LETTER_HEAD_BYTES`] and an
/// `original_bytes` header: well under the 1 MiB default limit of a Kafka topic, while
/// every message that failed only for its size (over 64 KiB) up to here stays whole.
pub const DEAD_LETTER_MAX_BYTES: usize = 512 << 10;
/// How much of a truncated dead letter is kept: enough to see what it was.
pub const DEAD_LETTER_HEAD_BYTES: usize = 64 << 10;

/// An invalid raw message on its way to the dead-letter topic.
pub struct DeadLetter<'a> {
    /// The original key, if any.
    pub key: Option<&'a [u8]>,
    /// The original bytes.
    pub payload: &'a [u8],
    /// Why it was rejected (an `InvalidReason` name).
    pub reason: &'a str,
    /// Where it came from.
    pub topic: &'a str,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
}

/// A serialised record waiting to be sent.
struct Outgoing {
    time: u64,
    key: String,
    payload: Vec<u8>,
    headers: Option<OwnedHeaders>,
}

enum SendFailure {
    Full(Outgoing),
    Fatal(String),
}

/// Writes every window of `windows` to the features topic, keyed by station, and returns
/// the durable stream: its frontier passes a time once all that time's records are
/// acknowledged by the broker.
pub fn kafka_features_sink<'s>(
    windows: StreamVec<'s, u64, WindowFeatures>,
    output: Arc<KafkaOutput>,
    ctx: SourceContext,
) -> StreamVec<'s, u64, ()> {
    let topic = output.topics().features.clone();
    // Window bounds formatted once per window end, not once per station.
    let mut bounds: Option<(u64, String, String)> = None;
    kafka_sink(
        windows,
        output,
        ctx,
        topic,
        "KafkaFeaturesSink",
        move |window, buffer| {
            if bounds.as_ref().is_none_or(|(end, _, _)| *end != window.window_end) {
                bounds = Some((
                    window.window_end,
                    format_rfc3339(window.window_start),
                    format_rfc3339(window.window_end),
                ));
            }
            let (_, start, end) = bounds.as_ref()?;
            // Serialising plain numbers and strings into a Vec cannot fail.
            window.write_json(buffer, start, end).ok()?;
            Some((window.station_id, end.clone()))
        },
    )
}

/// Writes every prediction to the predictions topic, keyed by station; returns the
/// durable stream like [`kafka_features_sink`].
pub fn kafka_predictions_sink<'s>(
    predictions: StreamVec<'s, u64, Prediction>,
    output: Arc<KafkaOutput>,
    ctx: SourceContext,
) -> StreamVec<'s, u64, ()> {
    let topic = output.topics().predictions.clone();
    kafka_sink(predictions, output, ctx, topic, "KafkaPredictionsSink", |p, buffer| {
        serde_json::to_writer(&mut *buffer, &p).ok()?;
        Some((p.station_id, format_rfc3339(p.window_end)))
    })
}

/// The shared sink: `encode` appends a record's payload to the buffer and returns its
/// key and formatted window end (`None` skips the record).
fn kafka_sink<'s, T: Clone + 'static>(
    records: StreamVec<'s, u64, T>,
    output: Arc<KafkaOutput>,
    ctx: SourceContext,
    topic: String,
    name: &str,
    mut encode: impl FnMut(T, &mut Vec<u8>) -> Option<(String, String)> + 'static,
) -> StreamVec<'s, u64, ()> {
    let scope = records.scope();
    records.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(Pipeline, name, move |initial, info| {
        drop(initial);
        let acks = Arc::new(WindowAcks::new(
            scope.worker().sync_activator_for(info.address.to_vec()),
            ctx.metrics.clone(),
        ));
        let activator = scope.activator_for(info.address);
        let mut held: BTreeMap<u64, Capability<u64>> = BTreeMap::new();
        let mut backlog: Vec<Outgoing> = Vec::new();
        let mut buffer = Vec::new();
        move |(input, frontier), _out| {
            input.for_each(|cap, data| {
                for record in data.drain(..) {
                    let time = *cap.time();
                    held.entry(time).or_insert_with(|| cap.retain(0));
                    buffer.clear();
                    let Some((key, end)) = encode(record, &mut buffer) else {
                        continue;
                    };
                    // The window end rides along as a header too, so consumers can
                    // upsert by (key, window_end) without parsing the payload.
                    let headers = OwnedHeaders::new_with_capacity(1).insert(Header {
                        key: "window_end",
                        value: Some(end.as_str()),
                    });
                    acks.add(time, 1);
                    backlog.push(Outgoing {
                        time,
                        key,
                        payload: buffer.clone(),
                        headers: Some(headers),
                    });
                }
            });
            let mut unsent = Vec::new();
            let mut full = false;
            for record in backlog.drain(..) {
                if full {
                    unsent.push(record);
                    continue;
                }
                let ack = Box::new(Ack::Window {
                    tracker: acks.clone(),
                    time: record.time,
                });
                match output.send(&topic, record, ack) {
                    Ok(()) => {}
                    Err(SendFailure::Full(record)) => {
                        full = true;
                        unsent.push(record);
                    }
                    Err(SendFailure::Fatal(message)) => {
                        ctx.fail(message);
                        return;
                    }
                }
            }
            backlog = unsent;
            if !backlog.is_empty() {
                // The producer's queue is full: try again soon, holding every
                // capability so nothing downstream counts these windows as durable.
                activator.activate_after(Duration::from_millis(5));
            }
            // A time is durable once no more input can arrive for it and every record
            // of it is acknowledged (records in the backlog count as unacknowledged).
            held.retain(|time, _| frontier.less_equal(time) || !acks.is_settled(*time));
        }
    })
}
