//! The serving side of `run`: the store the dataflow fills and, in process 0, the REST API
//! over it, with readiness that follows the sources and the brokers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::RunError;
use crate::config::{Config, SourceConfig};
use crate::kafka::watch::BrokerHealth;
use crate::metrics::Metrics;
use crate::serving::api::prom::{PipelineCollector, Prom};
use crate::serving::api::{ApiServer, ApiState, ReadyInfo, Role, catalogue_index};
use crate::serving::store::Store;

/// Creates the store when the API is on, and starts serving it in process 0. Every
/// process gets a store so that all build the same dataflow; in a cluster the sinks route
/// rows to worker 0, so the stores of the other processes stay empty.
pub(super) fn start_api(
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
