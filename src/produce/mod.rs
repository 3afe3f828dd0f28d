//! `weatherflow produce`: publishes readings to the raw topic.
//!
//! It creates missing topics first, then sends one message per reading, keyed by
//! station id so each station stays in one partition (its readings keep their order and
//! its windows live on one worker). File input is sent line by line *as is*, invalid lines
//! included: the pipeline, not the producer, decides what is valid, and tests rely on
//! poison messages reaching the topic. The producer is idempotent, so its own retries
//! add no duplicates.
//!
//! [`open_meteo`] is the producer's upstream: the client, parser and polling policy of the
//! Open-Meteo API. It is not a dataflow source; its readings reach the pipeline through
//! the raw topic like any other producer's.

pub mod open_meteo;

use std::io::{BufRead, BufReader};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use crate::config::{OpenMeteoConfig, ProduceConfig, ProduceInput};
use crate::kafka::KafkaSetupError;
use crate::produce::open_meteo::{Client, ClientError, Poller, Stats};
use crate::schema::format_rfc3339;
use crate::schema::parse_json;
use crate::serving::api::ApiServer;
use crate::serving::api::prom::Prom;
use crate::sources::file::plan::{Format, Plan, PlanError};
use crate::sources::generator::for_each_line;

/// How long the final flush may take.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// Why producing failed.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// Kafka could not be set up.
    #[error(transparent)]
    Kafka(#[from] KafkaSetupError),
    /// The input files could not be resolved.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A CSV file was given; the raw topic carries JSON.
    #[error("{0}: produce sends JSONL files; CSV is only read by `run --source file`")]
    NotJsonl(String),
    /// An input file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// librdkafka refused a record for a reason retrying cannot fix.
    #[error("kafka: cannot send to {topic}")]
    Send {
        /// The topic.
        topic: String,
        /// The error.
        #[source]
        source: KafkaError,
    },
    /// The `/health` and `/metrics` endpoint could not start.
    #[error(transparent)]
    Api(#[from] crate::serving::api::ApiError),
    /// The Open-Meteo client could not be created.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Records failed delivery or were still unacknowledged at the end.
    #[error("kafka: {failed} records failed delivery, {unflushed} unacknowledged at exit")]
    Undelivered {
        /// Permanently failed records.
        failed: u64,
        /// Records still in flight after the flush timeout.
        unflushed: i32,
    },
}

/// What a produce run did.
#[derive(Clone, Debug)]
pub struct ProduceSummary {
    /// Topics created because they were missing.
    pub created: Vec<String>,
    /// Records handed to the producer.
    pub sent: u64,
    /// Records acknowledged by the broker.
    pub acked: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// True when stopped by a signal.
    pub interrupted: bool,
}

#[derive(Default)]
struct Counters {
    acked: AtomicU64,
    failed: AtomicU64,
}

struct Deliveries(Arc<Counters>);

impl ClientContext for Deliveries {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        crate::kafka::logs::log(level, fac, message);
    }
    fn error(&self, e: rdkafka::error::KafkaError, reason: &str) {
        crate::kafka::logs::error(&e, reason);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.0.acked.fetch_add(1, Ordering::Relaxed),
            Err((e, _)) => {
                if self.0.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::error!(error = %e, "delivery failed (further failures are counted, not logged)");
                }
                0
            }
        };
    }
}

/// Sends records, pacing to a rate and logging progress.
struct Sender<'a> {
    producer: ThreadedProducer<Deliveries>,
    counters: Arc<Counters>,
    topic: String,
    rate: u64,
    started: Instant,
    sent: u64,
    progress: Duration,
    last_log: (Instant, u64),
    stop: &'a AtomicBool,
    error: Option<ProduceError>,
}

impl Sender<'_> {
    fn send(&mut self, key: Option<&[u8]>, payload: &[u8]) -> ControlFlow<()> {
        if self.stop.load(Ordering::Relaxed) {
            return ControlFlow::Break(());
        }
        let mut record = BaseRecord::to(&self.topic).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    // The local queue is full: wait for the broker (backpressure).
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                    if self.stop.load(Ordering::Relaxed) {
                        return ControlFlow::Break(());
                    }
                }
                Err((source, _)) => {
                    self.error = Some(ProduceError::Send {
                        topic: self.topic.clone(),
                        source,
                    });
                    return ControlFlow::Break(());
                }
            }
        }
        self.sent += 1;
        if self.rate > 0 && self.sent.is_multiple_of(64) {
            let due = Duration::from_secs_f64(self.sent as f64 / self.rate as f64);
            // Sleep in short slices so a stop request is seen promptly at any rate.
            while let Some(wait) = due.checked_sub(self.started.elapsed()) {
                if self.stop.load(Ordering::Relaxed) {
                    return ControlFlow::Break(());
                }
                std::thread::sleep(wait.min(Duration::from_millis(100)));
            }
        }
        if self.sent.is_multiple_of(4096) && self.last_log.0.elapsed() >= self.progress {
            let (at, before) = self.last_log;
            let rate = (self.sent - before) as f64 / at.elapsed().as_secs_f64();
            tracing::info!(
                sent = self.sent,
                acked = self.counters.acked.load(Ordering::Relaxed),
                msgs_per_s = rate.round() as u64,
                "producing"
            );
            self.last_log = (Instant::now(), self.sent);
        }
        ControlFlow::Continue(())
    }
}

/// Runs `produce` until the input ends or `stop` is set.
pub fn produce(cfg: &ProduceConfig, stop: &AtomicBool) -> Result<ProduceSummary, ProduceError> {
    let created = cfg
        .kafka
        .ensure_topics(&cfg.kafka.topics.all(), cfg.partitions, Duration::from_secs(30))?;
    for name in &created {
        tracing::info!(topic = %name, partitions = cfg.partitions, "created topic");
    }
    let files = match &cfg.input {
        ProduceInput::Files(inputs) => {
            let plan = Plan::new(inputs, u64::MAX)?;
            if let Some(csv) = plan.files.iter().find(|f| matches!(f.format, Format::Csv(_))) {
                return Err(ProduceError::NotJsonl(csv.path.display().to_string()));
            }
            plan.files.into_iter().map(|f| f.path).collect()
        }
        ProduceInput::Generator(_) | ProduceInput::OpenMeteo(_) => Vec::new(),
    };
    let counters = Arc::new(Counters::default());
    let mut client = cfg.kafka.client_config();
    // No duplicates from the producer's own retries.
    client.set("enable.idempotence", "true");
    // Readings are small and similar: lz4 batches shrink several-fold for little CPU.
    client.set("compression.type", "lz4");
    // A short linger fills batches at high rates without delaying a slow trickle.
    client.set("linger.ms", "5");
    cfg.kafka.apply_user_options(&mut client);
    let producer = client
        .create_with_context(Deliveries(counters.clone()))
        .map_err(|source| KafkaSetupError::Client {
            what: "producer",
            brokers: cfg.kafka.brokers.clone(),
            source: Box::new(source),
        })?;
    let upstream: Arc<std::sync::Mutex<Stats>> = Arc::default();
    let _api = match cfg.api {
        Some(addr) => {
            let mut prom = Prom::new(None);
            prom.register(Box::new(UpstreamCollector(upstream.clone())));
            Some(ApiServer::serve(
                addr,
                crate::serving::api::ops::filter(Arc::new(prom), "produce"),
            )?)
        }
        None => None,
    };
    let started = Instant::now();
    let mut sender = Sender {
        producer,
        counters: counters.clone(),
        topic: cfg.kafka.topics.raw.clone(),
        rate: cfg.rate,
        started,
        sent: 0,
        progress: cfg.progress_interval,
        last_log: (started, 0),
        stop,
        error: None,
    };
    match &cfg.input {
        ProduceInput::Generator(generator) => {
            for_each_line(generator, |station, line| sender.send(Some(station.as_bytes()), line));
        }
        ProduceInput::Files(_) => {
            for path in &files {
                if send_file(path, &mut sender)?.is_break() {
                    break;
                }
            }
        }
        ProduceInput::OpenMeteo(open_meteo) => poll_open_meteo(open_meteo, &mut sender, &upstream)?,
    }
    if let Some(e) = sender.error.take() {
        return Err(e);
    }
    let unflushed = match sender.producer.flush(FLUSH_TIMEOUT) {
        Ok(()) => 0,
        Err(_) => sender.producer.in_flight_count(),
    };
    let failed = counters.failed.load(Ordering::Relaxed);
    if failed > 0 || unflushed > 0 {
        return Err(ProduceError::Undelivered { failed, unflushed });
    }
    Ok(ProduceSummary {
        created,
        sent: sender.sent,
        acked: counters.acked.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        interrupted: stop.load(Ordering::Relaxed),
    })
}

/// Polls Open-Meteo until stopped: one request per cycle for every station, new readings
/// published keyed by station, the next request when [`Poller`] says. The first request
/// goes out at once, so a restarted producer does not sit idle for a quarter hour.
fn poll_open_meteo(
    cfg: &OpenMeteoConfig,
    sender: &mut Sender<'_>,
    upstream: &std::sync::Mutex<Stats>,
) -> Result<(), ProduceError> {
    let client = Client::new(&cfg.base_url, &cfg.stations, cfg.timeout)?;
    let mut poller = Poller::new(cfg.stations.to_vec(), cfg.interval, cfg.seed);
    tracing::info!(
        stations = cfg.stations.len(),
        interval_s = cfg.interval.as_secs(),
        url = %client.url(),
        "polling open-meteo"
    );
    let mut next_at = crate::schema::now_ms();
    loop {
        // A signal only sets the flag, so wait in short slices.
        loop {
            if sender.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let now = crate::schema::now_ms();
            if now >= next_at {
                break;
            }
            std::thread::sleep(Duration::from_millis((next_at - now).min(250)));
        }
        let fetch = client.fetch();
        let status = fetch.label();
        let cycle = poller.handle(crate::schema::now_ms(), fetch);
        for (station, payload) in &cycle.readings {
            if sender.send(Some(station.as_bytes()), payload).is_break() {
                return Ok(());
            }
        }
        let stats = poller.stats();
        *upstream.lock().unwrap_or_else(|p| p.into_inner()) = stats.clone();
        tracing::info!(
            status = %status,
            published = cycle.readings.len(),
            published_total = stats.published,
            duplicates_total = stats.duplicates,
            invalid_total = stats.invalid,
            next = %format_rfc3339(cycle.next_at_ms),
            wait = cycle.wait,
            "open-meteo cycle"
        );
        next_at = cycle.next_at_ms;
    }
}

/// The Open-Meteo counters for `/metrics`, copied from the poller after each cycle.
#[derive(Debug)]
struct UpstreamCollector(Arc<std::sync::Mutex<Stats>>);

impl prometheus_client::collector::Collector for UpstreamCollector {
    fn encode(&self, mut enc: prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::MetricType;
        use prometheus_client::metrics::counter::ConstCounter;
        let stats = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        {
            let mut family = enc.encode_descriptor(
                "upstream_requests",
                "Requests to Open-Meteo by outcome (HTTP status, timeout, error, malformed)",
                None,
                MetricType::Counter,
            )?;
            for (status, n) in &stats.requests {
                ConstCounter::new(*n).encode(family.encode_family(&[("status", status.as_str())])?)?;
            }
        }
        for (name, help, value) in [
            ("upstream_readings", "Readings received from Open-Meteo", stats.fetched),
            (
                "upstream_duplicates",
                "Readings skipped as already published",
                stats.duplicates,
            ),
            (
                "upstream_invalid",
                "Readings skipped as invalid weather-raw",
                stats.invalid,
            ),
            ("upstream_published", "Readings handed to Kafka", stats.published),
        ] {
            ConstCounter::new(value).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)?;
        }
        Ok(())
    }
}

fn send_file(path: &std::path::Path, sender: &mut Sender<'_>) -> Result<ControlFlow<()>, ProduceError> {
    let read_error = |source| ProduceError::Read {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::with_capacity(512);
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(read_error)? == 0 {
            return Ok(ControlFlow::Continue(()));
        }
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        if line.is_empty() {
            continue;
        }
        // The key is the station id when the line is valid enough to have one; other
        // lines are sent unkeyed and land on any partition.
        let station = parse_json(&line, 0).ok().map(|r| r.station);
        if sender.send(station.as_ref().map(|s| s.as_bytes()), &line).is_break() {
            return Ok(ControlFlow::Break(()));
        }
    }
}
