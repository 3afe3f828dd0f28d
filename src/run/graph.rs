//! The dataflow one worker builds: a source, the windows, the ML stage, and the sinks the
//! configuration asks for, with the probes that pace the sources and make the durable
//! frontier.
//!
//! ```text
//! source ─► windows ─┬─► jsonl / store / Kafka features ─────┐ (Kafka sinks: durable probe)
//!                    ├─► refused ─► dead-letter topic ────────┤
//!                    └─► predictions ─► jsonl / store / Kafka ┴─► pacing probe
//!                             └─► station states ─► state topic ─┘ (Kafka source: waits
//!                                 for the predictions it covers; durable probe)
//! ```

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use timely::dataflow::operators::Probe;
use timely::dataflow::operators::core::Filter;
use timely::dataflow::{ProbeHandle, StreamVec};

use crate::dataflow::StationLimits;
use crate::dataflow::predict::{Checkpointing, Locations};
use crate::delivery::KafkaOutput;
use crate::kafka::KafkaSettings;
use crate::kafka::watch::BrokerHealth;
use crate::metrics::Metrics;
use crate::ml::reload::Subscriber;
use crate::ml::station::Models;
use crate::schema::Reading;
use crate::serving::store::Store;
use crate::sinks::file::{JsonlWriter, jsonl_predictions_sink, jsonl_sink};
use crate::sinks::kafka::state::kafka_state_sink;
use crate::sinks::kafka::{kafka_features_sink, kafka_predictions_sink};
use crate::sinks::refused::{kafka_refused_sink, log_refused};
use crate::sinks::store::{store_features_sink, store_predictions_sink};
use crate::sources::file::plan::Plan;
use crate::sources::file::{ChunkExchange, file_source};
use crate::sources::generator::{GeneratorConfig, generator};
use crate::sources::kafka::{CommitHandle, KafkaPlan, KafkaSourceConfig, KafkaSourceParts, kafka_source};
use crate::worker::{FailureSlot, WorkerContext};

/// The source of a run, resolved before the workers start.
#[derive(Clone)]
pub(super) enum Input {
    Generator(GeneratorConfig),
    File(Arc<Plan>),
    Kafka(KafkaInput),
}

/// Everything a worker's Kafka source needs, resolved before the workers start.
#[derive(Clone)]
pub(super) struct KafkaInput {
    pub plan: Arc<KafkaPlan>,
    pub config: KafkaSourceConfig,
    pub settings: KafkaSettings,
    pub output: Arc<KafkaOutput>,
    pub brokers: Option<Arc<BrokerHealth>>,
}

/// The source as one worker builds it: a replay also needs that worker's side channel.
enum WorkerInput {
    Generator(GeneratorConfig),
    File(Arc<Plan>, ChunkExchange),
    Kafka(KafkaInput),
}

/// What every worker builds its graph from; shared by the workers of a process.
#[derive(Clone)]
pub(super) struct GraphParts {
    pub input: Input,
    pub metrics: Arc<Metrics>,
    pub failure: FailureSlot,
    pub stop: Arc<AtomicBool>,
    pub writer: Option<Arc<JsonlWriter>>,
    pub prediction_writer: Option<Arc<JsonlWriter>>,
    pub kafka_output: Option<Arc<KafkaOutput>>,
    pub store: Option<Arc<Store>>,
    /// In a cluster the store rows go to worker 0, whose process serves the API.
    pub routed: bool,
    pub models: Option<Models>,
    /// The process's model reload, when hot reload is on.
    pub reload: Option<Subscriber>,
    pub locations: Locations,
    /// With the Kafka source and ML: the predictor's state is checkpointed.
    pub checkpointing: Option<Checkpointing>,
    /// How many stations a worker holds, and for how long.
    pub limits: StationLimits,
    pub lateness_ms: u64,
    pub max_ahead_ms: u64,
    pub max_future_ms: Option<u64>,
    pub workers_per_process: usize,
}

/// What the run loop keeps of a worker's graph.
pub(super) struct Built {
    /// The Kafka source's commit state, for the final commit.
    pub commits: Option<CommitHandle>,
    /// How far the windows (and predictions) have been computed.
    pub computed: ProbeHandle<u64>,
    /// The durable probe: how far the outputs are in the broker.
    pub durable: ProbeHandle<u64>,
}

/// Builds the worker's dataflow.
pub(super) fn build(worker: &mut timely::worker::Worker, parts: &GraphParts) -> Built {
    let probe = ProbeHandle::new();
    let ctx = WorkerContext {
        metrics: parts.metrics.clone(),
        lateness_ms: parts.lateness_ms,
        probe: probe.clone(),
        max_ahead_ms: parts.max_ahead_ms,
        max_future_ms: parts.max_future_ms,
        // Global worker index = process × workers + local index.
        local_index: worker.index() % parts.workers_per_process,
        failure: parts.failure.clone(),
        stop: parts.stop.clone(),
    };
    let durable = ProbeHandle::new();
    let computed = ProbeHandle::new();
    // The side dataflow must be built before the main one on every worker.
    let source = match &parts.input {
        Input::File(plan) => WorkerInput::File(plan.clone(), ChunkExchange::new(worker, plan)),
        Input::Generator(cfg) => WorkerInput::Generator(cfg.clone()),
        Input::Kafka(kafka) => WorkerInput::Kafka(kafka.clone()),
    };
    let mut commits = None;
    worker.dataflow::<u64, _, _>(|scope| {
        let (readings, resume_ms) = match source {
            WorkerInput::File(plan, exchange) => (file_source(scope, plan, exchange, ctx.clone()), 0),
            WorkerInput::Generator(cfg) => (generator(scope, cfg, ctx.clone()), 0),
            WorkerInput::Kafka(kafka) => {
                let resume_ms = kafka.plan.resume_ms;
                let source = KafkaSourceParts {
                    plan: kafka.plan,
                    config: kafka.config,
                    settings: kafka.settings,
                    output: kafka.output,
                    durable: durable.clone(),
                    brokers: kafka.brokers,
                };
                let (stream, handle) = kafka_source(scope, source, ctx.clone());
                commits = Some(handle);
                (stream, resume_ms)
            }
        };
        wire(
            readings,
            resume_ms,
            parts,
            &ctx,
            &Probes {
                pacing: &probe,
                durable: &durable,
                computed: &computed,
            },
        );
    });
    Built {
        commits,
        computed,
        durable,
    }
}

/// The probes a worker's graph reports to.
struct Probes<'a> {
    /// Everything: the sources pace on it.
    pacing: &'a ProbeHandle<u64>,
    /// The Kafka sinks' outputs: the durable frontier.
    durable: &'a ProbeHandle<u64>,
    /// The last computed stream (predictions, else windows), for the drain on stop.
    computed: &'a ProbeHandle<u64>,
}

/// Everything after the source.
fn wire(
    readings: StreamVec<'_, u64, Reading>,
    resume_ms: u64,
    parts: &GraphParts,
    ctx: &WorkerContext,
    probes: &Probes,
) {
    let (probe, durable) = (probes.pacing, probes.durable);
    let built = crate::dataflow::windows(readings, parts.metrics.clone(), parts.limits);
    let mut windows = built.features;
    if resume_ms > 0 {
        // Windows ending before the resume point were acknowledged by an earlier run; the
        // readings replayed for state would re-emit them partially.
        windows = windows.filter(move |w| w.window_end >= resume_ms);
    }
    match &parts.kafka_output {
        Some(output) => {
            kafka_refused_sink(built.refused, output.clone(), ctx.clone())
                .probe_with(durable)
                .probe_with(probe);
        }
        None => log_refused(built.refused),
    }
    if let Some(writer) = &parts.writer {
        jsonl_sink(windows.clone(), writer.clone(), ctx.clone());
    }
    if let Some(store) = &parts.store {
        store_features_sink(windows.clone(), store.clone(), parts.routed);
    }
    if let Some(output) = &parts.kafka_output {
        kafka_features_sink(windows.clone(), output.clone(), ctx.clone())
            .probe_with(durable)
            .probe_with(probe);
    }
    let Some(models) = &parts.models else {
        windows.probe_with(probe).probe_with(probes.computed);
        return;
    };
    // The state sink's frontier, which the predictor watches to keep one snapshot in
    // flight at a time.
    let state_durable = parts.checkpointing.as_ref().map(|c| (c.clone(), ProbeHandle::new()));
    let predicted = crate::dataflow::predict::predictions(
        windows,
        models.clone(),
        parts.reload.clone(),
        parts.metrics.clone(),
        parts.locations.clone(),
        state_durable.clone(),
        parts.limits,
    );
    let predictions = predicted.predictions;
    if let Some(writer) = &parts.prediction_writer {
        jsonl_predictions_sink(predictions.clone(), writer.clone(), ctx.clone());
    }
    if let Some(store) = &parts.store {
        store_predictions_sink(predictions.clone(), store.clone(), parts.routed);
    }
    if let Some(output) = &parts.kafka_output {
        let predictions_durable = kafka_predictions_sink(predictions.clone(), output.clone(), ctx.clone())
            .probe_with(durable)
            .probe_with(probe);
        if parts.checkpointing.is_some() {
            // The states wait for the predictions they cover; their sink joins the durable
            // frontier, so offsets are committed only behind an acknowledged snapshot. It
            // stays out of the pacing probe: its frontier moves once per --state-interval,
            // which would cap a catch-up at --max-ahead per interval, and what it holds is
            // bounded anyway (one snapshot per interval, each station at most once).
            let sunk = kafka_state_sink(predicted.states, predictions_durable, output.clone(), ctx.clone())
                .probe_with(durable);
            if let Some((_, p)) = &state_durable {
                sunk.probe_with(p);
            }
        }
    }
    // Predictions complete after their windows, so probing them covers both, and the
    // windows need no extra copy for a probe of their own.
    predictions.probe_with(probe).probe_with(probes.computed);
}
