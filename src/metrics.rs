//! Process-wide counters shared by every worker and read by the progress reporter.
//!
//! Operators count per batch into plain locals and add to these atomics once per
//! activation, so the hot path never touches shared cache lines per record. Names mirror
//! the Prometheus series of DESIGN §8; the exporter arrives with the REST API.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::schema::InvalidReason;

/// Counters for one process. Construct with [`Metrics::new`] for the local worker count.
#[derive(Debug)]
pub struct Metrics {
    records_in: AtomicU64,
    invalid: [AtomicU64; InvalidReason::ALL.len()],
    late: AtomicU64,
    duplicate: AtomicU64,
    windows_emitted: AtomicU64,
    predictions: AtomicU64,
    anomalies: AtomicU64,
    bytes_read: AtomicU64,
    /// Per local worker: its source watermark in epoch ms; `u64::MAX` once it has finished,
    /// 0 before it has seen anything.
    watermarks: Vec<AtomicU64>,
    /// Per local worker: messages on the broker its Kafka partitions have not consumed;
    /// `u64::MAX` when unknown or not a Kafka source.
    consumer_lag: Vec<AtomicU64>,
    /// Window records acknowledged by the Kafka broker.
    windows_acked: AtomicU64,
    /// From a minute's windows reaching the Kafka sink to the broker acknowledging the last.
    ack_latency: LatencyHistogram,
}

/// Buckets per doubling of the latency histogram: 4 gives about ±9 % resolution.
const STEPS_PER_DOUBLING: f64 = 4.0;
/// Buckets: 2^(96/4) µs ≈ 16.8 s is the largest resolved latency; more lands in the last.
const LATENCY_BUCKETS: usize = 96;

/// A lock-free log-spaced histogram of latencies, for percentiles without storing samples.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS],
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl LatencyHistogram {
    /// Counts one latency.
    pub fn record(&self, latency: Duration) {
        let micros = latency.as_micros().max(1) as f64;
        let i = (micros.log2() * STEPS_PER_DOUBLING) as usize;
        self.buckets[i.min(LATENCY_BUCKETS - 1)].fetch_add(1, Relaxed);
    }

    /// The `q` quantile (0..=1), as its bucket's upper bound; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let upper = 2f64.powf((i + 1) as f64 / STEPS_PER_DOUBLING);
                return Some(Duration::from_micros(upper as u64));
            }
        }
        None
    }
}

/// A point-in-time copy of [`Metrics`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Readings accepted into the dataflow (`weatherflow_records_in_total`).
    pub records_in: u64,
    /// Rejected readings by reason (`weatherflow_records_invalid_total{reason}`).
    pub invalid: Vec<(InvalidReason, u64)>,
    /// Readings older than the watermark, dropped (`weatherflow_records_late_total`).
    pub late: u64,
    /// Readings repeating a (station_id, timestamp) already seen (`weatherflow_records_duplicate_total`).
    pub duplicate: u64,
    /// Windows emitted (`weatherflow_windows_emitted_total`).
    pub windows_emitted: u64,
    /// Predictions made (`weatherflow_predictions_total`).
    pub predictions: u64,
    /// Predictions flagged anomalous (`weatherflow_anomalies_total`).
    pub anomalies: u64,
    /// Input bytes consumed by file sources.
    pub bytes_read: u64,
    /// The smallest watermark over this process's running workers, epoch ms; `None` when
    /// no worker has started or all have finished.
    pub watermark_ms: Option<u64>,
    /// Kafka consumer lag summed over this process's partitions, when known.
    pub consumer_lag: Option<u64>,
    /// Window records acknowledged by the Kafka broker.
    pub windows_acked: u64,
    /// Median and 99th percentile of the emit-to-acknowledgement latency.
    pub ack_latency: Option<(Duration, Duration)>,
}

impl Snapshot {
    /// Invalid readings over all reasons.
    pub fn invalid_total(&self) -> u64 {
        self.invalid.iter().map(|(_, n)| n).sum()
    }
}

impl Metrics {
    /// Counters for a process running `local_workers` workers.
    pub fn new(local_workers: usize) -> Self {
        Metrics {
            records_in: AtomicU64::new(0),
            invalid: Default::default(),
            late: AtomicU64::new(0),
            duplicate: AtomicU64::new(0),
            windows_emitted: AtomicU64::new(0),
            predictions: AtomicU64::new(0),
            anomalies: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            watermarks: (0..local_workers).map(|_| AtomicU64::new(0)).collect(),
            consumer_lag: (0..local_workers).map(|_| AtomicU64::new(u64::MAX)).collect(),
            windows_acked: AtomicU64::new(0),
            ack_latency: LatencyHistogram::default(),
        }
    }

    /// Adds a source's per-activation tallies.
    pub fn add_source(&self, tally: &SourceTally) {
        self.records_in.fetch_add(tally.accepted, Relaxed);
        self.late.fetch_add(tally.late, Relaxed);
        self.bytes_read.fetch_add(tally.bytes, Relaxed);
        for (slot, n) in self.invalid.iter().zip(tally.invalid) {
            if n > 0 {
                slot.fetch_add(n, Relaxed);
            }
        }
    }

    /// Counts duplicates found by the pane builder.
    pub fn add_duplicates(&self, n: u64) {
        self.duplicate.fetch_add(n, Relaxed);
    }

    /// Counts emitted windows.
    pub fn add_windows(&self, n: u64) {
        self.windows_emitted.fetch_add(n, Relaxed);
    }

    /// Counts predictions and, among them, anomalies.
    pub fn add_predictions(&self, n: u64, anomalies: u64) {
        self.predictions.fetch_add(n, Relaxed);
        self.anomalies.fetch_add(anomalies, Relaxed);
    }

    /// Publishes the watermark of local worker `local_index` (`u64::MAX` = finished).
    pub fn set_watermark(&self, local_index: usize, ms: u64) {
        if let Some(slot) = self.watermarks.get(local_index) {
            slot.store(ms, Relaxed);
        }
    }

    /// Publishes the consumer lag of local worker `local_index`.
    pub fn set_consumer_lag(&self, local_index: usize, lag: u64) {
        if let Some(slot) = self.consumer_lag.get(local_index) {
            slot.store(lag, Relaxed);
        }
    }

    /// Counts window records acknowledged by the broker.
    pub fn add_acked(&self, n: u64) {
        self.windows_acked.fetch_add(n, Relaxed);
    }

    /// The emit-to-acknowledgement latency histogram.
    pub fn ack_latency(&self) -> &LatencyHistogram {
        &self.ack_latency
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> Snapshot {
        let marks = self
            .watermarks
            .iter()
            .map(|w| w.load(Relaxed))
            .filter(|&w| w != u64::MAX);
        Snapshot {
            records_in: self.records_in.load(Relaxed),
            invalid: InvalidReason::ALL
                .iter()
                .zip(&self.invalid)
                .map(|(r, n)| (*r, n.load(Relaxed)))
                .collect(),
            late: self.late.load(Relaxed),
            duplicate: self.duplicate.load(Relaxed),
            windows_emitted: self.windows_emitted.load(Relaxed),
            predictions: self.predictions.load(Relaxed),
            anomalies: self.anomalies.load(Relaxed),
            bytes_read: self.bytes_read.load(Relaxed),
            watermark_ms: marks.min().filter(|&w| w > 0),
            consumer_lag: self
                .consumer_lag
                .iter()
                .map(|l| l.load(Relaxed))
                .filter(|&l| l != u64::MAX)
                .reduce(|a, b| a + b),
            windows_acked: self.windows_acked.load(Relaxed),
            ack_latency: self.ack_latency.quantile(0.5).zip(self.ack_latency.quantile(0.99)),
        }
    }
}

/// What a source saw during one activation; flushed into [`Metrics`] in one go.
#[derive(Clone, Debug, Default)]
pub struct SourceTally {
    /// Readings emitted into the dataflow.
    pub accepted: u64,
    /// Late readings dropped.
    pub late: u64,
    /// Input bytes consumed.
    pub bytes: u64,
    /// Invalid readings by [`InvalidReason`] index.
    pub invalid: [u64; InvalidReason::ALL.len()],
}

impl SourceTally {
    /// Counts one rejected reading.
    pub fn reject(&mut self, reason: InvalidReason) {
        self.invalid[reason as usize] += 1;
    }

    /// Flushes into `metrics` and resets.
    pub fn flush(&mut self, metrics: &Metrics) {
        metrics.add_source(self);
        *self = SourceTally::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles_land_in_the_right_bucket() {
        let h = LatencyHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile(0.5).unwrap().as_secs_f64() * 1000.0;
        let p99 = h.quantile(0.99).unwrap().as_secs_f64() * 1000.0;
        assert!((50.0..=50.0 * 1.2).contains(&p50), "{p50}");
        assert!((99.0..=99.0 * 1.2).contains(&p99), "{p99}");
        h.record(Duration::from_secs(3600));
        assert!(h.quantile(1.0).unwrap() >= Duration::from_secs(16));
    }
}
