//! Running a job: timely workers, the progress reporter, and a clean shutdown.
//!
//! [`run`] starts the workers, each building the same dataflow, and then reports progress
//! from the calling thread until they finish. Two endings exist:
//!
//! - **Input exhausted** (file replay, `--events`): sources drop their capabilities, every
//!   open window closes and is emitted, and the dataflow completes.
//! - **Stop requested** (Ctrl-C/SIGTERM sets the flag): workers stop stepping and drop the
//!   dataflow. Windows not yet closed are *not* emitted: releasing capabilities instead
//!   would emit partial trailing windows as if they were final (notes §5).
//!
//! Either way, buffered output is flushed and a summary is returned.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use timely::dataflow::ProbeHandle;
use timely::dataflow::operators::Probe;

use timely::dataflow::operators::core::Filter;

use crate::config::{Config, SourceConfig};
use crate::kafka::watch::{BrokerHealth, BrokerWatch, OutputStall};
use crate::kafka::{KafkaSettings, KafkaSetupError};
use crate::metrics::{Metrics, Snapshot};
use crate::ml::MlError;
use crate::ml::registry::{DEFAULT_DIR, Origin, load_for_run};
use crate::ml::reload::{Loader, Reloader};
use crate::schema::format_rfc3339;
use crate::sinks::api::prom::{PipelineCollector, Prom};
use crate::sinks::api::{ApiError, ApiServer, ApiState, ReadyInfo, Role, catalogue_index};
use crate::sinks::file::{JsonlWriter, SinkError, jsonl_predictions_sink, jsonl_sink};
use crate::sinks::kafka::{KafkaOutput, kafka_features_sink, kafka_predictions_sink};
use crate::sinks::store::Store;
use crate::sinks::store::sink::{store_features_sink, store_predictions_sink};
use crate::sources::SourceContext;
use crate::sources::file::plan::{Plan, PlanError};
use crate::sources::file::{ChunkExchange, file_source};
use crate::sources::generator::{GeneratorConfig, generator};
use crate::sources::kafka::{CommitHandle, KafkaPlan, KafkaSourceConfig, KafkaSourceParts, kafka_source};

/// How long a stopping run waits for the broker to acknowledge what was sent.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The input could not be planned (user's fault: paths, patterns, headers).
    #[error(transparent)]
    Input(#[from] PlanError),
    /// The output could not be created or written.
    #[error(transparent)]
    Output(#[from] SinkError),
    /// Kafka could not be set up (unreachable broker, missing topic, bad option).
    #[error(transparent)]
    Kafka(#[from] KafkaSetupError),
    /// The REST API could not start (e.g. its port is in use).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The models could not be loaded.
    #[error("cannot load models (train with `weatherflow train`, or run with --no-ml)")]
    Models(#[from] MlError),
    /// The model reload thread could not be started.
    #[error("cannot start the model reload thread")]
    ReloadThread(#[source] std::io::Error),
    /// Records were still unacknowledged when the run had to end.
    #[error("kafka: {0} records not acknowledged by the broker within {DRAIN_TIMEOUT:?}")]
    Unflushed(i32),
    /// Timely could not start (e.g. cluster peers unreachable, port in use).
    #[error("cannot start timely workers: {0}")]
    Timely(String),
    /// An operator hit an error it cannot recover from.
    #[error("run aborted: {0}")]
    Aborted(String),
    /// A worker thread panicked (a bug).
    #[error("a worker panicked: {0}")]
    WorkerPanic(String),
}

/// How a run ended, and what it did.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Counters at the end.
    pub totals: Snapshot,
    /// Wall time.
    pub elapsed: Duration,
    /// True when stopped by a signal rather than by the end of the input.
    pub interrupted: bool,
    /// Where features were written.
    pub output: Option<PathBuf>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.totals;
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let ending = if self.interrupted { "stopped" } else { "input complete" };
        writeln!(f, "weatherflow summary ({ending})")?;
        writeln!(f, "  wall time         {:.3} s", secs)?;
        writeln!(
            f,
            "  readings in       {} ({:.0}/s)",
            t.records_in,
            t.records_in as f64 / secs
        )?;
        writeln!(f, "  invalid           {}", t.invalid_total())?;
        for (reason, n) in t.invalid.iter().filter(|(_, n)| *n > 0) {
            writeln!(f, "    {:<20}{n}", reason.as_str())?;
        }
        writeln!(f, "  late (dropped)    {}", t.late)?;
        writeln!(f, "  duplicates        {}", t.duplicate)?;
        writeln!(f, "  windows emitted   {}", t.windows_emitted)?;
        if t.predictions > 0 {
            writeln!(f, "  predictions       {} ({} anomalous)", t.predictions, t.anomalies)?;
        }
        if t.windows_acked > 0 {
            writeln!(f, "  windows to kafka  {} acknowledged", t.windows_acked)?;
        }
        if let Some((p50, p99)) = t.emit_latency {
            let max = t.emit_latency_max.unwrap_or_default();
            writeln!(f, "  watermark→emit    p50 {p50:.1?}, p99 {p99:.1?}, max {max:.1?}")?;
        }
        if let Some((p50, p99)) = t.ack_latency {
            writeln!(f, "  emit→ack latency  p50 {p50:.1?}, p99 {p99:.1?}")?;
        }
        if let Some(lag) = t.consumer_lag {
            writeln!(f, "  consumer lag      {lag}")?;
        }
        if let Some(path) = &self.output {
            writeln!(f, "  output            {}", path.display())?;
        }
        Ok(())
    }
}

/// The source of a run, resolved before the workers start.
enum Input {
    Generator(GeneratorConfig),
    File(Arc<Plan>),
    Kafka(KafkaInput),
}

/// Everything a worker's Kafka source needs, resolved before the workers start.
#[derive(Clone)]
struct KafkaInput {
    plan: Arc<KafkaPlan>,
    config: KafkaSourceConfig,
    settings: KafkaSettings,
    output: Arc<KafkaOutput>,
    brokers: Option<Arc<BrokerHealth>>,
}

/// The source as one worker builds it: a replay also needs that worker's side channel.
enum WorkerInput {
    Generator(GeneratorConfig),
    File(Arc<Plan>, ChunkExchange),
    Kafka(KafkaInput),
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn log_progress(previous: &Snapshot, now: &Snapshot, interval: Duration) {
    let rate = (now.records_in - previous.records_in) as f64 / interval.as_secs_f64();
    let watermark = now.watermark_ms.map(format_rfc3339).unwrap_or_else(|| "-".into());
    // Behind the wall clock only means something for live data; an accelerated generator
    // runs ahead of it, so a negative lag is not reported.
    let lag_s = now
        .watermark_ms
        .map(|w| (now_ms() as f64 - w as f64) / 1000.0)
        .filter(|l| *l >= 0.0);
    tracing::info!(
        events_per_s = rate.round() as u64,
        readings = now.records_in,
        windows = now.windows_emitted,
        late = now.late,
        invalid = now.invalid_total(),
        duplicates = now.duplicate,
        mb_read = now.bytes_read / 1_000_000,
        watermark = %watermark,
        watermark_lag_s = lag_s.map(|l| l.round() as i64),
        consumer_lag = now.consumer_lag,
        acked = now.windows_acked,
        "progress"
    );
}

/// Steps a stopping worker until the broker has acknowledged everything sent, so the
/// durable frontier, and with it the final commit, covers as much as possible. Sources
/// have stopped reading (they watch the stop flag); nothing new enters.
fn drain(worker: &mut timely::worker::Worker, output: &KafkaOutput) {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while output.in_flight() > 0 && Instant::now() < deadline {
        worker.step_or_park(Some(Duration::from_millis(10)));
    }
    // A few more rounds let the sinks release their capabilities and the progress
    // protocol carry the durable frontier to every worker.
    let settle = Instant::now() + Duration::from_millis(200);
    while Instant::now() < settle {
        worker.step_or_park(Some(Duration::from_millis(10)));
    }
}

/// Creates the store when the API is on, and starts serving it in process 0. Every
/// process gets a store so that all build the same dataflow; in a cluster the sinks route
/// rows to worker 0, so the stores of the other processes stay empty.
fn start_api(
    config: &Config,
    metrics: &Arc<Metrics>,
    complete: &Arc<AtomicBool>,
    brokers: Option<Arc<BrokerHealth>>,
) -> Result<(Option<Arc<Store>>, Option<ApiServer>), RunError> {
    let Some(api) = &config.api else {
        return Ok((None, None));
    };
    let store = Arc::new(Store::new(api.store));
    if config.cluster.process != 0 {
        tracing::info!("the API is served by process 0, with every station");
        return Ok((Some(store), None));
    }
    let mut prom = Prom::new(Some(store.clone()));
    prom.register(Box::new(PipelineCollector {
        metrics: metrics.clone(),
        source: config.source.name(),
        topic: match (&config.source, &config.kafka) {
            (SourceConfig::Kafka(_), Some(k)) => Some(k.topics.raw.clone()),
            _ => None,
        },
    }));
    let watched = metrics.clone();
    let complete = complete.clone();
    let state = ApiState {
        store: store.clone(),
        prom: Arc::new(prom),
        readiness: Arc::new(move || {
            if complete.load(Ordering::Relaxed) {
                return Ok(ReadyInfo {
                    watermark: None,
                    input_complete: true,
                });
            }
            if let Some(health) = &brokers {
                health.check()?;
            }
            match watched.snapshot().watermark_ms {
                Some(w) => Ok(ReadyInfo {
                    watermark: Some(w),
                    input_complete: false,
                }),
                None => Err("the sources have not moved the watermark yet".into()),
            }
        }),
        role: Role::Run,
        attribution: api.attribution.map(|a| a.attribution()),
        cors_origins: api.cors_origins.clone().into(),
        catalogue: catalogue_index(config.catalogue.as_deref()),
    };
    let server = ApiServer::start(api.addr, state)?;
    Ok((Some(store), Some(server)))
}

/// Logs where the models came from and, when they came from a registry and reload is
/// on, starts the process's reload thread.
fn start_reload(
    models: &crate::ml::station::Models,
    origin: &Origin,
    poll: Option<Duration>,
) -> Result<Option<Reloader>, RunError> {
    let (forecast, anomaly) = (&models.forecast.version, &models.anomaly.version);
    match origin {
        Origin::Embedded => {
            tracing::info!(
                %forecast,
                %anomaly,
                "models: embedded {forecast}/{anomaly} (no {DEFAULT_DIR}/ directory here; give --models DIR for a registry)"
            );
            if poll.is_some() {
                tracing::info!(
                    "model hot reload off: the models are built into the binary, there is no registry to watch"
                );
            }
            Ok(None)
        }
        Origin::Registry(dir) => {
            tracing::info!(%forecast, %anomaly, registry = %dir.display(), "models: {forecast}/{anomaly} from {origin}");
            match poll {
                Some(every) => Loader::new(dir.clone(), models.clone())
                    .spawn(every)
                    .map(Some)
                    .map_err(RunError::ReloadThread),
                None => Ok(None),
            }
        }
    }
}

/// Runs the job until its input ends or `stop` is set.
pub fn run(config: Config, stop: Arc<AtomicBool>) -> Result<Summary, RunError> {
    let started = Instant::now();
    let failure: Arc<OnceLock<String>> = Arc::default();
    let kafka_output = config
        .kafka
        .as_ref()
        .map(|settings| KafkaOutput::connect(settings, failure.clone()))
        .transpose()?;
    // With any Kafka client in the run, broker reachability is part of readiness, and the
    // Kafka source must not call partitions idle while it cannot see them.
    let watch = match &config.kafka {
        Some(settings) => Some(BrokerWatch::start(settings, &settings.topics.raw)?),
        None => None,
    };
    // The source, resolved once: a file replay carries its plan, so the workers' match
    // below is exhaustive without any "cannot happen" arm.
    let input = match &config.source {
        SourceConfig::File { inputs, chunk_bytes } => {
            let plan = Plan::new(inputs, *chunk_bytes)?;
            tracing::info!(
                files = plan.files.len(),
                chunks = plan.chunks.len(),
                mb = plan.total_bytes() / 1_000_000,
                "replaying"
            );
            Input::File(Arc::new(plan))
        }
        SourceConfig::Generator(cfg) => Input::Generator(cfg.clone()),
        SourceConfig::Kafka(source) => {
            // `into_config` only builds a Kafka source together with Kafka settings.
            let (Some(settings), Some(output)) = (&config.kafka, &kafka_output) else {
                return Err(RunError::Aborted("--source kafka needs --brokers".into()));
            };
            let plan = KafkaPlan::prepare(settings, source)?;
            tracing::info!(
                topic = %settings.topics.raw,
                partitions = plan.partitions.len(),
                committed = plan.committed.len(),
                resume = %if plan.resume_ms > 0 { format_rfc3339(plan.resume_ms) } else { "-".into() },
                "consuming"
            );
            Input::Kafka(KafkaInput {
                plan: Arc::new(plan),
                config: source.clone(),
                settings: settings.clone(),
                output: output.clone(),
                brokers: watch.as_ref().map(BrokerWatch::health),
            })
        }
    };
    let writer = config
        .output
        .as_deref()
        .map(JsonlWriter::create)
        .transpose()?
        .map(Arc::new);
    let prediction_writer = config
        .predictions
        .as_deref()
        .map(JsonlWriter::create)
        .transpose()?
        .map(Arc::new);
    // Loaded once here so a missing or broken registry fails the run before it starts;
    // each worker then shares these, and one thread per process watches the registry.
    let (models, reloader) = match &config.ml {
        Some(ml) => {
            let (models, origin) = load_for_run(ml.models.as_deref(), std::path::Path::new(DEFAULT_DIR))?;
            let reloader = start_reload(&models, &origin, ml.poll)?;
            (Some(models), reloader)
        }
        None => (None, None),
    };
    let locations: crate::dataflow::predict::Locations = Arc::new(
        config
            .catalogue
            .iter()
            .flat_map(|c| c.iter())
            .map(|s| {
                let location = crate::ml::features::Location {
                    latitude: Some(s.latitude),
                    longitude: Some(s.longitude),
                };
                (s.id.clone(), location)
            })
            .collect(),
    );
    let metrics = Arc::new(Metrics::new(config.cluster.workers));
    let complete = Arc::new(AtomicBool::new(false));
    let (store, api) = start_api(&config, &metrics, &complete, watch.as_ref().map(BrokerWatch::health))?;
    // In a cluster the rows go to worker 0, whose process serves the API.
    let routed = config.cluster.addresses.len() > 1;

    let job = {
        let (metrics, failure, stop, writer) = (metrics.clone(), failure.clone(), stop.clone(), writer.clone());
        let prediction_writer = prediction_writer.clone();
        let kafka_output = kafka_output.clone();
        let store = store.clone();
        // Each worker clones this; the reload thread itself stays here for the whole run.
        let reload = reloader.as_ref().map(Reloader::subscribe);
        let lateness_ms = config.lateness_ms;
        let max_ahead_ms = config.max_ahead_ms;
        let max_future_ms = config.max_future_ms;
        // Global worker index = process × workers + local index.
        let workers_per_process = config.cluster.workers;
        move |worker: &mut timely::worker::Worker| {
            let probe = ProbeHandle::new();
            let ctx = SourceContext {
                metrics: metrics.clone(),
                lateness_ms,
                probe: probe.clone(),
                max_ahead_ms,
                max_future_ms,
                local_index: worker.index() % workers_per_process,
                failure: failure.clone(),
                stop: stop.clone(),
            };
            let durable = ProbeHandle::new();
            // The side dataflow must be built before the main one on every worker.
            let source = match &input {
                Input::File(plan) => WorkerInput::File(plan.clone(), ChunkExchange::new(worker, plan)),
                Input::Generator(cfg) => WorkerInput::Generator(cfg.clone()),
                Input::Kafka(kafka) => WorkerInput::Kafka(kafka.clone()),
            };
            let mut commits: Option<CommitHandle> = None;
            worker.dataflow::<u64, _, _>(|scope| {
                let mut resume_ms = 0;
                let readings = match source {
                    WorkerInput::File(plan, exchange) => file_source(scope, plan, exchange, ctx.clone()),
                    WorkerInput::Generator(cfg) => generator(scope, cfg, ctx.clone()),
                    WorkerInput::Kafka(kafka) => {
                        resume_ms = kafka.plan.resume_ms;
                        let parts = KafkaSourceParts {
                            plan: kafka.plan,
                            config: kafka.config,
                            settings: kafka.settings,
                            output: kafka.output,
                            durable: durable.clone(),
                            brokers: kafka.brokers,
                        };
                        let (stream, handle) = kafka_source(scope, parts, ctx.clone());
                        commits = Some(handle);
                        stream
                    }
                };
                let fatal = ctx.clone();
                let mut windows = crate::dataflow::windows(readings, metrics.clone(), move |m| fatal.fail(m));
                if resume_ms > 0 {
                    // Windows ending before the resume point were acknowledged by an earlier
                    // run; the readings replayed for state would re-emit them partially.
                    windows = windows.filter(move |w| w.window_end >= resume_ms);
                }
                if let Some(writer) = &writer {
                    jsonl_sink(windows.clone(), writer.clone(), ctx.clone());
                }
                if let Some(store) = &store {
                    store_features_sink(windows.clone(), store.clone(), routed);
                }
                if let Some(output) = &kafka_output {
                    kafka_features_sink(windows.clone(), output.clone(), ctx.clone())
                        .probe_with(&durable)
                        .probe_with(&probe);
                }
                if let Some(models) = &models {
                    let predictions = crate::dataflow::predict::predictions(
                        windows,
                        models.clone(),
                        reload.clone(),
                        metrics.clone(),
                        locations.clone(),
                    );
                    if let Some(writer) = &prediction_writer {
                        jsonl_predictions_sink(predictions.clone(), writer.clone(), ctx.clone());
                    }
                    if let Some(store) = &store {
                        store_predictions_sink(predictions.clone(), store.clone(), routed);
                    }
                    if let Some(output) = &kafka_output {
                        kafka_predictions_sink(predictions.clone(), output.clone(), ctx.clone())
                            .probe_with(&durable)
                            .probe_with(&probe);
                    }
                    // Predictions complete after their windows, so probing them covers both,
                    // and the windows need no extra copy for a probe of their own.
                    predictions.probe_with(&probe);
                } else {
                    windows.probe_with(&probe);
                }
            });
            while !stop.load(Ordering::Relaxed) && failure.get().is_none() {
                if !worker.step_or_park(Some(Duration::from_millis(50))) {
                    break;
                }
            }
            if let Some(output) = &kafka_output
                && failure.get().is_none()
            {
                drain(worker, output);
                if let Some(mut committer) = commits.as_ref().and_then(|c| c.borrow_mut().take()) {
                    committer.commit_final(DRAIN_TIMEOUT);
                }
            }
            for id in worker.installed_dataflows() {
                worker.drop_dataflow(id);
            }
        }
    };
    let guards = timely::execute(config.cluster.timely(), job).map_err(RunError::Timely)?;

    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let results: Vec<Result<(), String>> = guards.join();
        let _ = done_tx.send(results);
    });
    let mut previous = metrics.snapshot();
    let mut stall = OutputStall::default();
    let health = watch.as_ref().map(BrokerWatch::health);
    let results = loop {
        match done_rx.recv_timeout(config.progress_interval) {
            Ok(results) => break results,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let now = metrics.snapshot();
                log_progress(&previous, &now, config.progress_interval);
                if let (Some(output), Some(health)) = (&kafka_output, &health)
                    && let Some(why) = stall.check(
                        output.in_flight(),
                        now.windows_acked,
                        health.stable_for(),
                        Instant::now(),
                    )
                    && failure.set(why.clone()).is_ok()
                {
                    tracing::error!(error = %why, "fatal");
                }
                previous = now;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break vec![Err("worker join thread vanished".into())];
            }
        }
    };
    for writer in [&writer, &prediction_writer].into_iter().flatten() {
        writer.flush()?;
    }
    if let Some(api) = api {
        complete.store(!stop.load(Ordering::Relaxed), Ordering::Relaxed);
        if config.linger && !stop.load(Ordering::Relaxed) {
            tracing::info!(
                url = %format!("http://{}/", api.addr()),
                "input complete; still serving the API until Ctrl-C/SIGTERM (--linger)"
            );
            // A signal handler only sets the flag, so there is nothing to block on.
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        api.stop();
    }
    if let Some(output) = &kafka_output {
        // After a fatal error the output may be the thing that is stuck: do not wait long.
        let failed = failure.get().is_some();
        let timeout = if failed { Duration::from_secs(1) } else { DRAIN_TIMEOUT };
        if output.flush(timeout).is_err() && !failed {
            return Err(RunError::Unflushed(output.in_flight()));
        }
    }
    if let Some(message) = results.into_iter().find_map(Result::err) {
        return Err(RunError::WorkerPanic(message));
    }
    if let Some(message) = failure.get() {
        return Err(RunError::Aborted(message.clone()));
    }
    Ok(Summary {
        totals: metrics.snapshot(),
        elapsed: started.elapsed(),
        interrupted: stop.load(Ordering::Relaxed),
        output: writer.map(|w| w.path().to_owned()),
    })
}
