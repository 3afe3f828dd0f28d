//! The serving side of `run`: the store the dataflow fills and, in process 0, the REST API
//! over it, with readiness that follows the sources and the brokers.
//!
//! With `--brokers`, process 0 first fills its store from the output topics (the last
//! `--history`, up to where they ended at start), on a thread of its own while the
//! workers start, so the dashboard shows what an earlier run made. `/ready` answers 503
//! until that is done.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::RunError;
use crate::config::{Config, SourceConfig};
use crate::kafka::watch::BrokerHealth;
use crate::kafka::{KafkaSettings, KafkaSetupError};
use crate::metrics::Metrics;
use crate::serving::api::prom::{PipelineCollector, Prom};
use crate::serving::api::{ApiServer, ApiState, ReadyInfo, Role, catalogue_index};
use crate::serving::store::Store;
use crate::serving::tail::{From, Progress, Tail};

/// Creates the store when the API is on, and starts serving it in process 0. Every
/// process gets a store so that all build the same dataflow; in a cluster the sinks route
/// rows to worker 0, so the stores of the other processes stay empty.
pub(super) fn start_api(
    config: &Config,
    metrics: &Arc<Metrics>,
    complete: &Arc<AtomicBool>,
    brokers: Option<Arc<BrokerHealth>>,
    stop: &Arc<AtomicBool>,
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
    let rebuild = match &config.kafka {
        Some(kafka) => rebuild_store(kafka.clone(), api.store.history_ms, store.clone(), stop.clone()),
        None => Arc::new(Rebuild {
            done: AtomicBool::new(true),
            progress: Progress::default(),
        }),
    };
    let watched = metrics.clone();
    let complete = complete.clone();
    let state = ApiState {
        store: store.clone(),
        prom: Arc::new(prom),
        readiness: Arc::new(move || {
            if !rebuild.done.load(Ordering::Relaxed) {
                let read: u64 = rebuild
                    .progress
                    .consumed
                    .iter()
                    .map(|n| n.load(Ordering::Relaxed))
                    .sum();
                return Err(format!("rebuilding the store from Kafka ({read} records read)"));
            }
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

/// The store's rebuild from the output topics.
struct Rebuild {
    done: AtomicBool,
    progress: Progress,
}

/// Starts the rebuild thread. Missing output topics mean there is nothing to rebuild; any
/// other failure is logged and the run goes on with what was read (the store is a view,
/// never the record: the topics keep everything).
fn rebuild_store(kafka: KafkaSettings, history_ms: u64, store: Arc<Store>, stop: Arc<AtomicBool>) -> Arc<Rebuild> {
    let rebuild = Arc::new(Rebuild {
        done: AtomicBool::new(false),
        progress: Progress::default(),
    });
    let shared = rebuild.clone();
    let body = move || {
        let started = Instant::now();
        match Tail::connect(&kafka, "weatherflow-run-store", From::History(history_ms)) {
            Ok(mut tail) => {
                tracing::info!(backlog = tail.backlog(), "rebuilding the store from Kafka");
                while !tail.caught_up() && !stop.load(Ordering::Relaxed) {
                    tail.poll_into(&store, &shared.progress);
                }
                tracing::info!(
                    stations = store.station_count(),
                    records = store.record_count(),
                    secs = format!("{:.2}", started.elapsed().as_secs_f64()),
                    "store rebuilt from Kafka"
                );
            }
            Err(KafkaSetupError::NoTopic { topic, .. }) => {
                tracing::info!(%topic, "no output topic yet; nothing to rebuild the store from");
            }
            Err(e) => {
                tracing::warn!(
                    error = %crate::error::chain(&e),
                    "cannot rebuild the store from Kafka; it fills from this run's output only"
                );
            }
        }
        shared.done.store(true, Ordering::Relaxed);
    };
    if let Err(e) = std::thread::Builder::new().name("store-rebuild".into()).spawn(body) {
        tracing::warn!(error = %e, "cannot start the store rebuild; it fills from this run's output only");
        rebuild.done.store(true, Ordering::Relaxed);
    }
    rebuild
}
