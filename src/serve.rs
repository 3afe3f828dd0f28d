//! `weatherflow serve`: the REST API and dashboard fed from Kafka instead of a dataflow.
//!
//! It reads `weather-features` and `weather-predictions` into the same [`Store`] that
//! `run` fills in-process, so both answer every route identically. Partitions are
//! assigned, not subscribed: each serving process wants *every* partition, and no offsets
//! are committed, because a restart rebuilds the store from the topics anyway.
//!
//! Rebuilding starts at the last `--history` of wall-clock time (Kafka's message
//! timestamps are the pipeline's send times), or at the oldest message with
//! `--from-beginning`. `/ready` answers 503 until every partition has been read up to
//! where it ended when `serve` started, so a load balancer never routes to a half-built
//! store. Inserting is an upsert by (station, window end), so the pipeline's
//! at-least-once re-deliveries change nothing.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::ServeConfig;
use crate::kafka::KafkaSetupError;
use crate::kafka::logs::Quiet;
use crate::kafka::watch::{BrokerHealth, BrokerWatch};
use crate::schema::{Prediction, WindowFeatures};
use crate::serving::api::prom::Prom;
use crate::serving::api::{ApiError, ApiServer, ApiState, ReadyInfo, Role, catalogue_index};
use crate::serving::store::Store;

/// Bound on one metadata or offsets request.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Partitions `serve` creates when the output topics do not exist yet (as compose does).
const DEFAULT_PARTITIONS: i32 = 4;
/// Bound on one end-offset request for the lag gauge.
const LAG_TIMEOUT: Duration = Duration::from_millis(500);
/// Records inserted per store call at most, so a long catch-up shows progress.
const BATCH: usize = 4096;

/// Why `serve` stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Kafka could not be set up.
    #[error(transparent)]
    Kafka(#[from] KafkaSetupError),
    /// The API could not start.
    #[error(transparent)]
    Api(#[from] ApiError),
}

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
    caught_up: AtomicBool,
    /// Records inserted, per kind.
    consumed: [AtomicU64; 2],
    /// Records that were not valid JSON of their topic's schema, per kind.
    invalid: [AtomicU64; 2],
    /// Newest window end inserted.
    newest_end: AtomicU64,
    /// Lag per (topic, partition), refreshed each progress interval.
    lag: Mutex<BTreeMap<(String, i32), i64>>,
    topics: [String; 2],
}

/// What `serve` did, for the exit line.
#[derive(Clone, Debug)]
pub struct ServeSummary {
    /// Features inserted.
    pub features: u64,
    /// Predictions inserted.
    pub predictions: u64,
    /// Records skipped as invalid.
    pub invalid: u64,
    /// Stations held at the end.
    pub stations: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl fmt::Display for ServeSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "served for {:.1} s: {} windows and {} predictions consumed ({} invalid), {} stations held",
            self.elapsed.as_secs_f64(),
            self.features,
            self.predictions,
            self.invalid,
            self.stations
        )
    }
}

/// One partition being rebuilt.
#[derive(Debug)]
struct Part {
    topic: String,
    kind: Kind,
    id: i32,
    /// The end offset when serve started: reading up to here means caught up.
    target: i64,
    /// The next offset to read.
    position: i64,
}

/// Runs `serve` until `stop` is set.
pub fn serve(config: &ServeConfig, stop: &AtomicBool) -> Result<ServeSummary, ServeError> {
    let started = Instant::now();
    let topics = [
        config.kafka.topics.features.clone(),
        config.kafka.topics.predictions.clone(),
    ];
    let (consumer, mut parts) = connect(config, &topics)?;
    let store = Arc::new(Store::new(config.api.store));
    let progress = Arc::new(Progress {
        topics: topics.clone(),
        ..Progress::default()
    });
    let watch = BrokerWatch::start(&config.kafka, &config.kafka.topics.predictions)?;
    let server = start_api(config, &store, &progress, watch.health())?;
    let mut features: Vec<WindowFeatures> = Vec::new();
    let mut predictions: Vec<Prediction> = Vec::new();
    let mut last_report = Instant::now();
    let mut logged_error = false;
    let mut check_caught_up = true;
    while !stop.load(Ordering::Relaxed) {
        // Drain what is buffered, then insert it in one go per kind.
        let mut timeout = Duration::from_millis(100);
        while features.len() + predictions.len() < BATCH {
            let Some(result) = consumer.poll(timeout) else { break };
            timeout = Duration::ZERO;
            let message = match result {
                Ok(m) => m,
                Err(e) => {
                    // librdkafka retries by itself; say it once, not per poll.
                    if !logged_error {
                        tracing::warn!(error = %e, "kafka consumer error; retrying");
                        logged_error = true;
                    }
                    continue;
                }
            };
            logged_error = false;
            let Some(part) = parts
                .iter_mut()
                .find(|p| p.id == message.partition() && p.topic == message.topic())
            else {
                continue;
            };
            part.position = message.offset() + 1;
            let payload = message.payload().unwrap_or_default();
            let ok = match part.kind {
                Kind::Features => serde_json::from_slice(payload).map(|f| features.push(f)).is_ok(),
                Kind::Predictions => serde_json::from_slice(payload).map(|p| predictions.push(p)).is_ok(),
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
        let newest = features
            .iter()
            .map(|f| f.window_end)
            .chain(predictions.iter().map(|p| p.window_end))
            .max();
        if let Some(newest) = newest {
            progress.newest_end.fetch_max(newest, Ordering::Relaxed);
        }
        progress.consumed[0].fetch_add(features.len() as u64, Ordering::Relaxed);
        progress.consumed[1].fetch_add(predictions.len() as u64, Ordering::Relaxed);
        if !features.is_empty() {
            store.insert_features(features.drain(..));
        }
        if !predictions.is_empty() {
            store.insert_predictions(predictions.drain(..));
        }
        if check_caught_up && parts.iter().all(|p| p.position >= p.target) {
            check_caught_up = false;
            progress.caught_up.store(true, Ordering::Relaxed);
            tracing::info!(
                stations = store.station_count(),
                records = store.record_count(),
                seconds = started.elapsed().as_secs_f64(),
                "store rebuilt; ready"
            );
        }
        if last_report.elapsed() >= config.progress_interval {
            last_report = Instant::now();
            report(&consumer, &parts, &progress, &store);
        }
    }
    server.stop();
    Ok(ServeSummary {
        features: progress.consumed[0].load(Ordering::Relaxed),
        predictions: progress.consumed[1].load(Ordering::Relaxed),
        invalid: progress.invalid.iter().map(|n| n.load(Ordering::Relaxed)).sum(),
        stations: store.station_count(),
        elapsed: started.elapsed(),
    })
}

/// Creates the output topics if missing, plans where each partition starts (the last
/// `--history`, or the oldest message) and where it ends for readiness, and assigns them.
fn connect(config: &ServeConfig, topics: &[String; 2]) -> Result<(BaseConsumer<Quiet>, Vec<Part>), ServeError> {
    let kafka = &config.kafka;
    let created = kafka.ensure_topics(&[&topics[0], &topics[1]], DEFAULT_PARTITIONS, SETUP_TIMEOUT)?;
    if !created.is_empty() {
        tracing::info!(topics = ?created, "created output topics");
    }
    let mut client = kafka.client_config();
    client
        .set("group.id", "weatherflow-serve")
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
    let since_ms = crate::schema::now_ms().saturating_sub(config.api.store.history_ms);
    let mut parts = Vec::new();
    let mut assignment = TopicPartitionList::new();
    for (kind, topic) in [Kind::Features, Kind::Predictions].into_iter().zip(topics) {
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
            }
            .into());
        }
        let mut times = TopicPartitionList::new();
        for &id in &ids {
            times
                .add_partition_offset(topic, id, Offset::Offset(since_ms as i64))
                .map_err(request(format!("planning {topic}")))?;
        }
        let starts = if config.from_beginning {
            None
        } else {
            Some(
                consumer
                    .offsets_for_times(times, SETUP_TIMEOUT)
                    .map_err(request(format!("finding offsets of {topic} by time")))?,
            )
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
    let backlog: i64 = parts.iter().map(|p| (p.target - p.position).max(0)).sum();
    tracing::info!(
        partitions = parts.len(),
        backlog,
        from = if config.from_beginning { "beginning" } else { "history" },
        "rebuilding the store from Kafka"
    );
    Ok((consumer, parts))
}

/// Refreshes the lag per partition from the broker's end offsets and logs a line.
fn report(consumer: &BaseConsumer<Quiet>, parts: &[Part], progress: &Progress, store: &Store) {
    let mut total = 0;
    {
        let mut lag = progress.lag.lock().unwrap_or_else(|p| p.into_inner());
        for p in parts {
            // One short round trip per partition; during an outage stop at the first
            // failure rather than stall the consumer for every partition's timeout.
            match consumer.fetch_watermarks(&p.topic, p.id, LAG_TIMEOUT) {
                Ok((_, high)) => {
                    let l = (high - p.position).max(0);
                    total += l;
                    lag.insert((p.topic.clone(), p.id), l);
                }
                Err(_) => break,
            }
        }
    }
    tracing::info!(
        windows = progress.consumed[0].load(Ordering::Relaxed),
        predictions = progress.consumed[1].load(Ordering::Relaxed),
        stations = store.station_count(),
        records = store.record_count(),
        lag = total,
        ready = progress.caught_up.load(Ordering::Relaxed),
        "serving"
    );
}

fn start_api(
    config: &ServeConfig,
    store: &Arc<Store>,
    progress: &Arc<Progress>,
    brokers: Arc<BrokerHealth>,
) -> Result<ApiServer, ServeError> {
    let mut prom = Prom::new(Some(store.clone()));
    prom.register(Box::new(ServeCollector(progress.clone())));
    let watched = progress.clone();
    let state = ApiState {
        store: store.clone(),
        prom: Arc::new(prom),
        readiness: Arc::new(move || {
            brokers.check()?;
            if watched.caught_up.load(Ordering::Relaxed) {
                let newest = watched.newest_end.load(Ordering::Relaxed);
                Ok(ReadyInfo {
                    watermark: (newest > 0).then_some(newest),
                    input_complete: false,
                })
            } else {
                Err("still rebuilding the store from Kafka".into())
            }
        }),
        role: Role::Serve,
        attribution: config.api.attribution.map(|a| a.attribution()),
        cors_origins: config.api.cors_origins.clone().into(),
        catalogue: catalogue_index(config.catalogue.as_deref()),
    };
    Ok(ApiServer::start(config.api.addr, state)?)
}

/// The consumer's counters for `/metrics`.
#[derive(Debug)]
struct ServeCollector(Arc<Progress>);

impl Collector for ServeCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let p = &self.0;
        for (name, help, counts) in [
            (
                "serve_records",
                "Records consumed into the store, by topic",
                &p.consumed,
            ),
            (
                "serve_records_invalid",
                "Records skipped as not valid JSON of their topic's schema, by topic",
                &p.invalid,
            ),
        ] {
            let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (topic, n) in p.topics.iter().zip(counts) {
                let labels = [("topic", topic.as_str())];
                ConstCounter::new(n.load(Ordering::Relaxed)).encode(family.encode_family(&labels)?)?;
            }
        }
        let lags = p.lag.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if !lags.is_empty() {
            let mut family = enc.encode_descriptor(
                "kafka_consumer_lag",
                "Messages on the broker not yet consumed, per partition",
                None,
                MetricType::Gauge,
            )?;
            for ((topic, partition), lag) in lags {
                let partition = partition.to_string();
                let labels = [("topic", topic.as_str()), ("partition", partition.as_str())];
                ConstGauge::new(lag).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
