//! `weatherflow serve`: the REST API and dashboard fed from Kafka instead of a dataflow.
//!
//! It tails `weather-features` and `weather-predictions` ([`Tail`]) into the same
//! [`Store`] that `run` fills in-process, so both answer every route identically.
//! Rebuilding starts at the last `--history` of wall-clock time, or at the oldest message
//! with `--from-beginning`. `/ready` answers 503 until every partition has been read up to
//! where it ended when `serve` started, so a load balancer never routes to a half-built
//! store.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::config::ServeConfig;
use crate::kafka::KafkaSetupError;
use crate::kafka::watch::{BrokerHealth, BrokerWatch};
use crate::serving::api::prom::Prom;
use crate::serving::api::{ApiError, ApiServer, ApiState, ReadyInfo, Role, catalogue_index};
use crate::serving::store::Store;
use crate::serving::tail::{From, Progress, Tail};

/// Bound on one metadata or offsets request.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Partitions `serve` creates when the output topics do not exist yet (as compose does).
const DEFAULT_PARTITIONS: i32 = 4;

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

/// Runs `serve` until `stop` is set.
pub fn serve(config: &ServeConfig, stop: &AtomicBool) -> Result<ServeSummary, ServeError> {
    let started = Instant::now();
    let topics = [
        config.kafka.topics.features.clone(),
        config.kafka.topics.predictions.clone(),
    ];
    let created = config
        .kafka
        .ensure_topics(&[&topics[0], &topics[1]], DEFAULT_PARTITIONS, SETUP_TIMEOUT)?;
    if !created.is_empty() {
        tracing::info!(topics = ?created, "created output topics");
    }
    let from = if config.from_beginning {
        From::Beginning
    } else {
        From::History(config.api.store.history_ms)
    };
    let mut tail = Tail::connect(&config.kafka, "weatherflow-serve", from)?;
    tracing::info!(
        partitions = tail.partitions(),
        backlog = tail.backlog(),
        from = if config.from_beginning { "beginning" } else { "history" },
        "rebuilding the store from Kafka"
    );
    let store = Arc::new(Store::new(config.api.store));
    let progress = Arc::new(Progress {
        topics: topics.clone(),
        ..Progress::default()
    });
    let watch = BrokerWatch::start(&config.kafka, &config.kafka.topics.predictions)?;
    let server = start_api(config, &store, &progress, watch.health())?;
    let mut last_report = Instant::now();
    let mut check_caught_up = true;
    while !stop.load(Ordering::Relaxed) {
        tail.poll_into(&store, &progress);
        if check_caught_up && tail.caught_up() {
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
            let lag = tail.report(&progress);
            tracing::info!(
                windows = progress.consumed[0].load(Ordering::Relaxed),
                predictions = progress.consumed[1].load(Ordering::Relaxed),
                stations = store.station_count(),
                records = store.record_count(),
                lag,
                ready = progress.caught_up.load(Ordering::Relaxed),
                "serving"
            );
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
