//! Running a job: timely workers, the progress reporter, and a clean shutdown.
//!
//! [`run`] resolves everything that can fail before a worker starts (the input, the
//! outputs, Kafka, the models, the API), starts the workers, each building the same
//! dataflow ([`graph`]), and then reports progress from the calling thread until they
//! finish. Two endings exist:
//!
//! - **Input exhausted** (file replay, `--events`): sources drop their capabilities, every
//!   open window closes and is emitted, and the dataflow completes.
//! - **Stop requested** (Ctrl-C/SIGTERM sets the flag): workers stop stepping and drop the
//!   dataflow. Windows not yet closed are *not* emitted: releasing capabilities instead
//!   would emit partial trailing windows as if they were final (docs/design.md §9.9).
//!
//! Either way, buffered output is flushed and a summary is returned. A stop is honoured
//! within a second even while the brokers are away: the drain only waits for output the
//! brokers can still acknowledge, and what they cannot is replayed from the last
//! checkpoint by the next run.

mod api;
mod graph;
mod restore;
mod summary;

pub use summary::Summary;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use crate::config::{Config, SourceConfig};
use crate::dataflow::StationLimits;
use crate::dataflow::predict::Checkpointing;
use crate::delivery::KafkaOutput;
use crate::kafka::KafkaSetupError;
use crate::kafka::watch::{BrokerHealth, BrokerWatch, OutputStall};
use crate::metrics::Metrics;
use crate::ml::MlError;
use crate::ml::registry::{DEFAULT_DIR, Origin, load_for_run};
use crate::ml::reload::{Loader, Reloader};
use crate::schema::format_rfc3339;
use crate::serving::api::ApiError;
use crate::sinks::file::{JsonlWriter, SinkError};
use crate::sources::file::plan::{Plan, PlanError};
use crate::sources::kafka::KafkaPlan;
use crate::worker::{FailureSlot, Fatal, Retry};
use graph::{GraphParts, Input, KafkaInput};

/// How long a stopping run waits for the broker to acknowledge what was sent.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a worker parks when it has nothing to do: also how soon it sees a stop.
const PARK: Duration = Duration::from_millis(50);

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
    /// Records were still unacknowledged when the run had to end. Nothing is lost: their
    /// input offsets were not committed, so the next run sends them again.
    #[error(
        "kafka: {0} records not acknowledged by the broker before the end; the next run resends them \
         from the last checkpoint"
    )]
    Unflushed(i32),
    /// Timely could not start (e.g. cluster peers unreachable, port in use).
    #[error("cannot start timely workers: {0}")]
    Timely(String),
    /// An operator hit an error it cannot recover from.
    #[error("run aborted")]
    Aborted(#[source] Fatal),
    /// A worker thread panicked (a bug).
    #[error("a worker panicked: {0}")]
    WorkerPanic(String),
}

impl RunError {
    /// Whether running again can get past the error (see [`Retry`]).
    pub fn retry(&self) -> Retry {
        match self {
            RunError::Aborted(fatal) => fatal.retry(),
            RunError::Kafka(KafkaSetupError::Request { .. })
            | RunError::Unflushed(_)
            | RunError::Timely(_)
            | RunError::ReloadThread(_) => Retry::Restart,
            RunError::Input(_)
            | RunError::Output(_)
            | RunError::Kafka(_)
            | RunError::Api(_)
            | RunError::Models(_)
            | RunError::WorkerPanic(_) => Retry::AfterFix,
        }
    }
}

/// Steps a stopping worker until the broker has acknowledged everything sent and the
/// durable frontier has caught up with the outputs (the predictor's last snapshot of its
/// station states included), so the final commit covers as much as possible. Sources
/// have stopped reading (they watch the stop flag); nothing new enters. While the brokers
/// do not answer there is nothing to wait for: the stop goes ahead at once.
fn drain(
    worker: &mut timely::worker::Worker,
    output: &KafkaOutput,
    brokers: Option<&BrokerHealth>,
    built: &graph::Built,
) {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let reachable = || brokers.is_none_or(|b| b.check().is_ok());
    let behind = || {
        built.computed.with_frontier(|outputs| match outputs.first() {
            Some(t) => built.durable.less_than(t),
            None => !built.durable.done(),
        })
    };
    while (output.in_flight() > 0 || behind()) && Instant::now() < deadline && reachable() {
        worker.step_or_park(Some(Duration::from_millis(10)));
    }
    if !reachable() {
        return;
    }
    // A few more rounds let the sinks release their capabilities and the progress
    // protocol carry the durable frontier to every worker.
    let settle = Instant::now() + Duration::from_millis(200);
    while Instant::now() < settle {
        worker.step_or_park(Some(Duration::from_millis(10)));
    }
}

/// Resolves the run's input before the workers start, so that a bad path or an
/// unreachable broker fails the run at once.
fn resolve_input(
    config: &Config,
    kafka_output: Option<&Arc<KafkaOutput>>,
    watch: Option<&BrokerWatch>,
) -> Result<Input, RunError> {
    Ok(match &config.source {
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
            let (Some(settings), Some(output)) = (&config.kafka, kafka_output) else {
                return Err(RunError::Kafka(KafkaSetupError::NoBrokers));
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
                brokers: watch.map(BrokerWatch::health),
            })
        }
    })
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
    let failure = FailureSlot::default();
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
    let health = watch.as_ref().map(BrokerWatch::health);
    let input = resolve_input(&config, kafka_output.as_ref(), watch.as_ref())?;
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
    // With the Kafka source the predictor's state is checkpointed beside the offsets, and
    // an earlier run's is restored before any worker starts.
    let checkpointing = match (&input, &config.ml, &config.kafka) {
        (Input::Kafka(kafka), Some(ml), Some(settings)) if ml.checkpoint_state => Some(Checkpointing {
            interval: ml.state_interval,
            restored: restore::restore_states(settings, &kafka.config.group)?,
            stop: stop.clone(),
        }),
        _ => None,
    };
    let metrics = Arc::new(Metrics::new(config.cluster.workers));
    let complete = Arc::new(AtomicBool::new(false));
    let (store, api) = api::start_api(&config, &metrics, &complete, health.clone(), &stop)?;
    let parts = GraphParts {
        input,
        metrics: metrics.clone(),
        failure: failure.clone(),
        stop: stop.clone(),
        writer: writer.clone(),
        prediction_writer: prediction_writer.clone(),
        kafka_output: kafka_output.clone(),
        store,
        routed: config.cluster.addresses.len() > 1,
        models,
        // Each worker clones this; the reload thread itself stays here for the whole run.
        reload: reloader.as_ref().map(Reloader::subscribe),
        locations,
        checkpointing,
        limits: StationLimits::new(
            config.max_stations,
            config.cluster.workers * config.cluster.addresses.len(),
            config.station_ttl_ms,
        ),
        lateness_ms: config.lateness_ms,
        max_ahead_ms: config.max_ahead_ms,
        max_future_ms: config.max_future_ms,
        workers_per_process: config.cluster.workers,
    };
    let job = {
        let health = health.clone();
        move |worker: &mut timely::worker::Worker| work(worker, &parts, health.as_deref())
    };
    let guards = timely::execute(config.cluster.timely(), job).map_err(RunError::Timely)?;

    let (done_tx, done_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let results: Vec<Result<(), String>> = guards.join();
        let _ = done_tx.send(results);
    });
    let mut previous = metrics.snapshot();
    let mut stall = OutputStall::new(config.stall_timeout);
    let results = loop {
        match done_rx.recv_timeout(config.progress_interval) {
            Ok(results) => break results,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let now = metrics.snapshot();
                summary::log_progress(&previous, &now, config.progress_interval);
                if let (Some(output), Some(health)) = (&kafka_output, &health) {
                    let in_flight = output.in_flight();
                    if let Some(waited) = stall.check(in_flight, now.windows_acked, health.stable_for(), Instant::now())
                    {
                        recreate(output, in_flight, waited, &failure);
                        stall = OutputStall::new(config.stall_timeout);
                    }
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
        // After a fatal error, or with the brokers away, the output may be the thing that
        // is stuck: do not wait long. What is not acknowledged is replayed by the next run.
        let failed = failure.is_set();
        let away = health.as_ref().is_some_and(|h| h.check().is_err());
        let timeout = if failed || away {
            Duration::from_millis(500)
        } else {
            DRAIN_TIMEOUT
        };
        if output.flush(timeout).is_err() && !failed {
            return Err(RunError::Unflushed(output.in_flight()));
        }
    }
    if let Some(message) = results.into_iter().find_map(Result::err) {
        return Err(RunError::WorkerPanic(message));
    }
    if let Some(fatal) = failure.get() {
        return Err(RunError::Aborted(fatal.clone()));
    }
    Ok(Summary {
        totals: metrics.snapshot(),
        elapsed: started.elapsed(),
        interrupted: stop.load(Ordering::Relaxed),
        output: writer.map(|w| w.path().to_owned()),
    })
}

/// Replaces a producer the brokers stopped acknowledging although they answer (a broker
/// lost its log): the senders send their unacknowledged records again through the new one.
/// Only if no producer can be created does the run stop.
fn recreate(output: &KafkaOutput, in_flight: i32, waited: Duration, failure: &FailureSlot) {
    tracing::warn!(
        in_flight,
        unacknowledged_for_s = waited.as_secs(),
        "kafka: output unacknowledged although the brokers answer (did a broker lose its log?); \
         recreating the producer and sending the unacknowledged records again"
    );
    match output.recreate() {
        Ok(()) => tracing::info!(generation = output.generation(), "kafka: producer recreated"),
        Err(e) => failure.set(Fatal::ProducerStuck {
            in_flight,
            secs: waited.as_secs(),
            source: Arc::new(e),
        }),
    }
}

/// One worker's life: build the graph, step until the input ends, a stop is asked or an
/// operator fails, then drain the Kafka output and make the final commit.
fn work(worker: &mut timely::worker::Worker, parts: &GraphParts, brokers: Option<&BrokerHealth>) {
    let built = graph::build(worker, parts);
    let local = worker.index() % parts.workers_per_process;
    while !parts.stop.load(Ordering::Relaxed) && !parts.failure.is_set() {
        let more = worker.step_or_park(Some(PARK));
        parts.metrics.note_step(local, crate::schema::now_ms());
        if !more {
            break;
        }
    }
    if let Some(output) = &parts.kafka_output
        && !parts.failure.is_set()
    {
        drain(worker, output, brokers, &built);
        if let Some(mut committer) = built.commits.as_ref().and_then(|c| c.borrow_mut().take()) {
            let reachable = brokers.is_none_or(|b| b.check().is_ok());
            // With the brokers away a final commit could only time out; the last
            // checkpoint they acknowledged stands.
            if reachable {
                committer.commit_final(DRAIN_TIMEOUT);
            }
        }
    }
    for id in worker.installed_dataflows() {
        worker.drop_dataflow(id);
    }
}
