//! Prometheus metrics for `/metrics`, encoded by `prometheus-client` (OpenMetrics text).
//!
//! The pipeline already counts into lock-free atomics ([`Metrics`]); rather than counting
//! twice, collectors read them at scrape time and emit constant samples. Only the HTTP
//! latency histogram is a live `prometheus-client` metric, because the API is the one
//! place that observes it. Names follow docs/design.md §8; counters get `_total` from the
//! encoder. No label carries a station id: `route`, `reason`, `source`, `topic` and
//! `partition` are all bounded.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::metrics::{LatencyHistogram, Metrics};
use crate::serving::store::Store;

/// Latency bounds, seconds: 50 µs to 10 s, about ×2.5 apart.
pub const LATENCY_BOUNDS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

type RouteLabel = [(&'static str, &'static str); 1];

/// The registry behind `/metrics`.
#[derive(Debug)]
pub struct Prom {
    registry: Registry,
    http: Family<RouteLabel, Histogram>,
}

impl Prom {
    /// A registry with the HTTP latency histogram and, given a store, its gauges; add
    /// the pipeline's, the consumer's or the producer's collectors with [`Prom::register`].
    pub fn new(store: Option<Arc<Store>>) -> Self {
        let mut registry = Registry::with_prefix("weatherflow");
        let http: Family<RouteLabel, Histogram> =
            Family::new_with_constructor(|| Histogram::new(LATENCY_BOUNDS.iter().copied()));
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an API request, by route",
            http.clone(),
        );
        if let Some(store) = store {
            registry.register_collector(Box::new(StoreCollector(store)));
        }
        Prom { registry, http }
    }

    /// Adds a collector read at every scrape.
    pub fn register(&mut self, collector: Box<dyn Collector>) {
        self.registry.register_collector(collector);
    }

    /// Records one request's latency under its route label.
    pub fn observe(&self, route: &'static str, latency: Duration) {
        self.http
            .get_or_create(&[("route", route)])
            .observe(latency.as_secs_f64());
    }

    /// The OpenMetrics text. Encoding into a `String` cannot fail; if a collector ever
    /// did, the scrape gets what was encoded so far rather than an error page.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "metrics encoding stopped early");
        }
        out
    }
}

/// Emits one unlabelled counter.
fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    ConstCounter::new(value).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// Emits one unlabelled gauge.
fn gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> fmt::Result {
    ConstGauge::new(value).encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// Emits a histogram re-bucketed from a [`LatencyHistogram`].
fn histogram(enc: &mut DescriptorEncoder, name: &str, help: &str, h: &LatencyHistogram) -> fmt::Result {
    let (sum, count, buckets) = h.rebucket(&LATENCY_BOUNDS);
    let mut metric = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)
}

/// The pipeline's counters (`run`).
#[derive(Debug)]
pub struct PipelineCollector {
    /// The process's counters.
    pub metrics: Arc<Metrics>,
    /// `generator`, `file` or `kafka`: the `source` label of `records_in`.
    pub source: &'static str,
    /// The raw topic, for the consumer-lag `topic` label (Kafka source only).
    pub topic: Option<String>,
}

impl Collector for PipelineCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = self.metrics.snapshot();
        {
            let mut family = enc.encode_descriptor(
                "records_in",
                "Readings accepted into the dataflow",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(s.records_in).encode(family.encode_family(&[("source", self.source)])?)?;
        }
        {
            let mut family = enc.encode_descriptor(
                "records_invalid",
                "Readings rejected as invalid, by reason (dead-lettered with Kafka)",
                None,
                MetricType::Counter,
            )?;
            for (reason, n) in &s.invalid {
                ConstCounter::new(*n).encode(family.encode_family(&[("reason", reason.as_str())])?)?;
            }
        }
        let counters = [
            ("records_late", "Readings older than the watermark, dropped", s.late),
            (
                "records_duplicate",
                "Readings repeating a (station, timestamp) already seen",
                s.duplicate,
            ),
            ("windows_emitted", "Windows emitted", s.windows_emitted),
            ("predictions", "Predictions made", s.predictions),
            ("anomalies", "Predictions flagged anomalous", s.anomalies),
            (
                "state_records",
                "Station-state records written to the state topic",
                s.state_records,
            ),
            (
                "windows_acked",
                "Window records acknowledged by the Kafka broker",
                s.windows_acked,
            ),
            ("input_bytes", "Input bytes read by file sources", s.bytes_read),
        ];
        for (name, help, value) in counters {
            counter(&mut enc, name, help, value)?;
        }
        gauge(
            &mut enc,
            "stations_live",
            "Stations this process's workers hold window state for (bounded by --max-stations, forgotten after --station-ttl)",
            s.stations_live as f64,
        )?;
        if let Some(watermark) = s.watermark_ms {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            // Negative when the generator runs ahead of the wall clock (--speed above 1).
            let lag = now - watermark as f64 / 1000.0;
            gauge(
                &mut enc,
                "watermark_lag_seconds",
                "Wall clock minus the process watermark",
                lag,
            )?;
        }
        histogram(
            &mut enc,
            "window_emit_latency_seconds",
            "From the watermark passing a window's end to the window leaving the emitter",
            self.metrics.emit_latency(),
        )?;
        histogram(
            &mut enc,
            "kafka_ack_latency_seconds",
            "From a minute's windows reaching the Kafka sink to the broker acknowledging them",
            self.metrics.ack_latency(),
        )?;
        let lags = self.metrics.partition_lags();
        if let Some(topic) = &self.topic
            && !lags.is_empty()
        {
            let mut family = enc.encode_descriptor(
                "kafka_consumer_lag",
                "Messages on the broker not yet consumed, per partition of the raw topic",
                None,
                MetricType::Gauge,
            )?;
            for (partition, lag) in lags {
                let partition = partition.to_string();
                let labels = [("topic", topic.as_str()), ("partition", partition.as_str())];
                ConstGauge::new(lag as f64).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

/// The store's size.
#[derive(Debug)]
struct StoreCollector(Arc<Store>);

impl Collector for StoreCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let store = &self.0;
        gauge(
            &mut enc,
            "store_stations",
            "Stations held by the API store",
            store.station_count() as f64,
        )?;
        gauge(
            &mut enc,
            "store_records",
            "Windows and predictions held by the API store",
            store.record_count() as f64,
        )?;
        gauge(
            &mut enc,
            "store_anomalies",
            "Anomalies held in the API's feed",
            store.anomaly_count() as f64,
        )
    }
}
