//! Filling a [`Store`] from the weather-features and weather-predictions topics.
//!
//! `serve` tails the topics for as long as it runs; `run --brokers` reads them once at
//! start, up to where they ended, so that its store (and the dashboard) comes back after a
//! restart with the last `--history` (docs/design.md §7.7). Both use this consumer.
//!
//! Partitions are assigned, not subscribed: each reader wants *every* partition, and no
//! offsets are committed, because a restart rebuilds the store from the topics anyway.
//! Reading starts at the last `--history` of wall-clock time (Kafka's message timestamps
//! are the pipeline's send times), or at the oldest message when asked. Inserting is an
//! upsert by (station, window end), so at-least-once re-deliveries change nothing.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::kafka::logs::Quiet;
use crate::kafka::{KafkaSettings, KafkaSetupError};
use crate::schema::{Prediction, WindowFeatures};
use crate::serving::store::Store;

/// Bound on one metadata or offsets request.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one end-offset request for the lag gauge.
const LAG_TIMEOUT: Duration = Duration::from_millis(500);
/// Records inserted per store call at most, so a long catch-up shows progress.
const BATCH: usize = 4096;

/// The two topics, by index in [`Progress`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Features = 0,
    Predictions = 1,
}

/// What the consumer has done, shared with `/ready` and `/metrics`.
#[derive(Debug, Default)]
pub struct Progress {
    /// Every partition reached its starting end.
    pub caught_up: AtomicBool,
    /// Records inserted, per kind (features, predictions).
    pub consumed: [AtomicU64; 2],
    /// Records that were not valid JSON of their topic's schema, per kind.
    pub invalid: [AtomicU64; 2],
    /// Newest window end inserted.
    pub newest_end: AtomicU64,
    /// Lag per (topic, partition), refreshed by [`Tail::report`].
    pub lag: Mutex<BTreeMap<(String, i32), i64>>,
    /// The two topics' names.
    pub topics: [String; 2],
}

/// One partition being read.
#[derive(Debug)]
struct Part {
    topic: String,
    kind: Kind,
    id: i32,
    /// The end offset when reading started: reading up to here means caught up.
    target: i64,
    /// The next offset to read.
    position: i64,
}

/// Where reading starts.
#[derive(Clone, Copy, Debug)]
pub enum From {
    /// The oldest message.
    Beginning,
    /// The first message sent within this many ms before now.
    History(u64),
}

/// A consumer of both output topics, assigned every partition.
pub struct Tail {
    consumer: BaseConsumer<Quiet>,
    parts: Vec<Part>,
    features: Vec<WindowFeatures>,
    predictions: Vec<Prediction>,
    logged_error: bool,
}

impl Tail {
    /// Plans where each partition starts and ends and assigns them. A missing topic is
    /// [`KafkaSetupError::NoTopic`].
    pub fn connect(kafka: &KafkaSettings, group: &str, from: From) -> Result<Tail, KafkaSetupError> {
        let topics = [kafka.topics.features.clone(), kafka.topics.predictions.clone()];
        let mut client = kafka.client_config();
        client
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest");
        kafka.apply_user_options(&mut client);
        let consumer: BaseConsumer<Quiet> =
            client
                .create_with_context(Quiet)
                .map_err(|source| KafkaSetupError::Client {
                    what: "consumer",
                    brokers: kafka.brokers.clone(),
                    source: Box::new(source),
                })?;
        let request = |what: String| {
            move |source| KafkaSetupError::Request {
                what,
                brokers: kafka.brokers.clone(),
                source: Box::new(source),
            }
        };
        let mut parts = Vec::new();
        let mut assignment = TopicPartitionList::new();
        for (kind, topic) in [Kind::Features, Kind::Predictions].into_iter().zip(&topics) {
            let metadata = consumer
                .fetch_metadata(Some(topic), SETUP_TIMEOUT)
                .map_err(request(format!("fetching metadata of {topic}")))?;
            let ids: Vec<i32> = metadata
                .topics()
                .iter()
                .filter(|t| t.name() == topic && t.error().is_none())
                .flat_map(|t| t.partitions().iter().map(|p| p.id()))
                .collect();
            if ids.is_empty() {
                return Err(KafkaSetupError::NoTopic {
                    topic: topic.clone(),
                    brokers: kafka.brokers.clone(),
                });
            }
            let starts = match from {
                From::Beginning => None,
                From::History(history_ms) => {
                    let since_ms = crate::schema::now_ms().saturating_sub(history_ms);
                    let mut times = TopicPartitionList::new();
                    for &id in &ids {
                        times
                            .add_partition_offset(topic, id, Offset::Offset(since_ms as i64))
                            .map_err(request(format!("planning {topic}")))?;
                    }
                    Some(
                        consumer
                            .offsets_for_times(times, SETUP_TIMEOUT)
                            .map_err(request(format!("finding offsets of {topic} by time")))?,
                    )
                }
            };
            for id in ids {
                let (low, high) = consumer
                    .fetch_watermarks(topic, id, SETUP_TIMEOUT)
                    .map_err(request(format!("reading offsets of {topic}/{id}")))?;
                // No message at or after the time: start at the end.
                let start = match starts
                    .as_ref()
                    .and_then(|s| s.find_partition(topic, id))
                    .map(|e| e.offset())
                {
                    None => low,
                    Some(Offset::Offset(o)) => o.max(low),
                    Some(_) => high,
                };
                assignment
                    .add_partition_offset(topic, id, Offset::Offset(start))
                    .map_err(request(format!("assigning {topic}/{id}")))?;
                parts.push(Part {
                    topic: topic.clone(),
                    kind,
                    id,
                    target: high,
                    position: start,
                });
            }
        }
        consumer
            .assign(&assignment)
            .map_err(request("assigning partitions".into()))?;
        Ok(Tail {
            consumer,
            parts,
            features: Vec::new(),
            predictions: Vec::new(),
            logged_error: false,
        })
    }

    /// Records between the starts and the ends planned by [`connect`](Self::connect).
    pub fn backlog(&self) -> i64 {
        self.parts.iter().map(|p| (p.target - p.position).max(0)).sum()
    }

    /// Partitions assigned.
    pub fn partitions(&self) -> usize {
        self.parts.len()
    }

    /// Whether every partition has been read up to where it ended at the start.
    pub fn caught_up(&self) -> bool {
        self.parts.iter().all(|p| p.position >= p.target)
    }

    /// Reads what is buffered (waiting up to 100 ms for the first record), at most one
    /// batch, and inserts it into `store`.
    pub fn poll_into(&mut self, store: &Store, progress: &Progress) {
        let mut timeout = Duration::from_millis(100);
        while self.features.len() + self.predictions.len() < BATCH {
            let Some(result) = self.consumer.poll(timeout) else {
                break;
            };
            timeout = Duration::ZERO;
            let message = match result {
                Ok(m) => m,
                Err(e) => {
                    // librdkafka retries by itself; say it once, not per poll.
                    if !self.logged_error {
                        tracing::warn!(error = %e, "kafka consumer error; retrying");
                        self.logged_error = true;
                    }
                    continue;
                }
            };
            self.logged_error = false;
            let Some(part) = self
                .parts
                .iter_mut()
                .find(|p| p.id == message.partition() && p.topic == message.topic())
            else {
                continue;
            };
            part.position = message.offset() + 1;
            let payload = message.payload().unwrap_or_default();
            let ok = match part.kind {
                Kind::Features => serde_json::from_slice(payload).map(|f| self.features.push(f)).is_ok(),
                Kind::Predictions => serde_json::from_slice(payload)
                    .map(|p| self.predictions.push(p))
                    .is_ok(),
            };
            if !ok {
                let n = progress.invalid[part.kind as usize].fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() || n == 0 {
                    tracing::warn!(
                        topic = %part.topic,
                        partition = part.id,
                        offset = message.offset(),
                        invalid_so_far = n + 1,
                        "skipping a record that is not valid JSON of its topic's schema"
                    );
                }
            }
        }
        let newest = self
            .features
            .iter()
            .map(|f| f.window_end)
            .chain(self.predictions.iter().map(|p| p.window_end))
            .max();
        if let Some(newest) = newest {
            progress.newest_end.fetch_max(newest, Ordering::Relaxed);
        }
        progress.consumed[0].fetch_add(self.features.len() as u64, Ordering::Relaxed);
        progress.consumed[1].fetch_add(self.predictions.len() as u64, Ordering::Relaxed);
        if !self.features.is_empty() {
            store.insert_features(self.features.drain(..));
        }
        if !self.predictions.is_empty() {
            store.insert_predictions(self.predictions.drain(..));
        }
    }

    /// Refreshes the lag per partition from the broker's end offsets; returns the total.
    pub fn report(&self, progress: &Progress) -> i64 {
        let mut total = 0;
        let mut lag = progress.lag.lock().unwrap_or_else(|p| p.into_inner());
        for p in &self.parts {
            // One short round trip per partition; during an outage stop at the first
            // failure rather than stall the consumer for every partition's timeout.
            match self.consumer.fetch_watermarks(&p.topic, p.id, LAG_TIMEOUT) {
                Ok((_, high)) => {
                    let l = (high - p.position).max(0);
                    total += l;
                    lag.insert((p.topic.clone(), p.id), l);
                }
                Err(_) => break,
            }
        }
        total
    }
}
