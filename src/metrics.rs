//! Process-wide counters shared by every worker and read by the progress reporter.
//!
//! Operators count per batch into plain locals and add to these atomics once per
//! activation, so the hot path never touches shared cache lines per record. Names mirror
//! the Prometheus series of docs/design.md §8; `serving::api::prom` renders them at scrape time.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::schema::{InvalidReason, MINUTE_MS};

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
    state_records: AtomicU64,
    bytes_read: AtomicU64,
    /// Per local worker: its source watermark in epoch ms; `u64::MAX` once it has finished,
    /// 0 before it has seen anything.
    watermarks: Vec<AtomicU64>,
    /// Per local worker: when it last finished a step, epoch ms (0: not yet).
    stepped: Vec<AtomicU64>,
    /// Per local worker: the stations its pane builder holds.
    stations_live: Vec<AtomicU64>,
    /// Per Kafka partition consumed by this process: messages on the broker not yet
    /// consumed. Written about once per source activation, read at scrape time.
    partition_lag: Mutex<BTreeMap<i32, u64>>,
    /// When this process's watermark frontier (the smallest worker watermark, floored to
    /// the minute as the sources' capabilities are) first reached each value: the start
    /// of a window's emit latency. Bounded; old entries fall off the front.
    frontier_passed: Mutex<VecDeque<(u64, Instant)>>,
    /// From the watermark passing a window's end to the window leaving the emitter.
    emit_latency: LatencyHistogram,
    /// Window records acknowledged by the Kafka broker.
    windows_acked: AtomicU64,
    /// From a minute's windows reaching the Kafka sink to the broker acknowledging the last.
    ack_latency: LatencyHistogram,
}

/// Buckets per doubling of the latency histogram: 4 gives about ±9 % resolution.
const STEPS_PER_DOUBLING: f64 = 4.0;
/// Buckets: 2^(96/4) µs ≈ 16.8 s is the largest resolved latency; more lands in the last.
const LATENCY_BUCKETS: usize = 96;
/// Frontier passages remembered for emit latency: a day of minutes, far more than any
/// emitter lags behind its sources.
const FRONTIER_MARKS: usize = 1440;

/// A lock-free log-spaced histogram of latencies, for percentiles without storing samples.
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS],
    /// Sum of all recorded latencies, µs (Prometheus wants `_sum`).
    sum_micros: AtomicU64,
    /// The largest recorded latency, µs, exactly (the buckets only bound it).
    max_micros: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
            max_micros: AtomicU64::new(0),
        }
    }
}

impl LatencyHistogram {
    /// Counts one latency.
    pub fn record(&self, latency: Duration) {
        let micros = latency.as_micros().max(1) as f64;
        let i = (micros.log2() * STEPS_PER_DOUBLING) as usize;
        self.buckets[i.min(LATENCY_BUCKETS - 1)].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(micros as u64, Relaxed);
        self.max_micros.fetch_max(micros as u64, Relaxed);
    }

    /// The largest latency recorded; `None` when empty.
    pub fn max(&self) -> Option<Duration> {
        match self.max_micros.load(Relaxed) {
            0 => None,
            m => Some(Duration::from_micros(m)),
        }
    }

    /// The histogram re-bucketed onto `bounds` (seconds, ascending) for Prometheus: per
    /// bound the count of latencies in it (not cumulative), then `+Inf`; plus the sum in
    /// seconds and the total count. A fine log bucket is counted under the first bound
    /// at or above its upper edge, so a count may sit one bound high (±9 %), never low.
    pub fn rebucket(&self, bounds: &[f64]) -> (f64, u64, Vec<(f64, u64)>) {
        let mut out: Vec<(f64, u64)> = bounds.iter().map(|b| (*b, 0)).collect();
        out.push((f64::INFINITY, 0));
        let mut count = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            let n = bucket.load(Relaxed);
            if n == 0 {
                continue;
            }
            count += n;
            let upper_s = 2f64.powf((i + 1) as f64 / STEPS_PER_DOUBLING) / 1e6;
            let slot = bounds.iter().position(|b| upper_s <= *b).unwrap_or(bounds.len());
            out[slot].1 += n;
        }
        (self.sum_micros.load(Relaxed) as f64 / 1e6, count, out)
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
                let upper = Duration::from_micros(2f64.powf((i + 1) as f64 / STEPS_PER_DOUBLING) as u64);
                // A bucket's upper bound can exceed every latency in it; the exact maximum
                // keeps a quantile from being reported above the largest latency seen.
                return Some(self.max().map_or(upper, |max| upper.min(max)));
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
    /// Station-state records written to the state topic (`weatherflow_state_records_total`).
    pub state_records: u64,
    /// Stations held by this process's workers (`weatherflow_stations_live`).
    pub stations_live: u64,
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
    /// Median and 99th percentile of the watermark-to-emit latency of windows.
    pub emit_latency: Option<(Duration, Duration)>,
    /// The largest watermark-to-emit latency.
    pub emit_latency_max: Option<Duration>,
    /// How long ago (ms) the least recently stepping worker of this process finished a
    /// step; `None` before every worker has stepped once. A worker blocked inside an
    /// operator shows here as a growing age.
    pub step_age_ms: Option<u64>,
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
            state_records: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            watermarks: (0..local_workers).map(|_| AtomicU64::new(0)).collect(),
            stepped: (0..local_workers).map(|_| AtomicU64::new(0)).collect(),
            stations_live: (0..local_workers).map(|_| AtomicU64::new(0)).collect(),
            partition_lag: Mutex::default(),
            frontier_passed: Mutex::default(),
            emit_latency: LatencyHistogram::default(),
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

    /// Counts readings judged invalid inside the dataflow (after the sources counted them
    /// in), such as station key collisions.
    pub fn add_invalid(&self, reason: InvalidReason, n: u64) {
        self.invalid[reason as usize].fetch_add(n, Relaxed);
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

    /// Publishes how many stations the pane builder of worker `worker_index` (global; taken
    /// modulo this process's workers) holds.
    pub fn set_stations_live(&self, worker_index: usize, n: u64) {
        if let Some(slot) = self.stations_live.get(worker_index % self.stations_live.len().max(1)) {
            slot.store(n, Relaxed);
        }
    }

    /// Counts station-state records handed to the state sink.
    pub fn add_state_records(&self, n: u64) {
        self.state_records.fetch_add(n, Relaxed);
    }

    /// Publishes the watermark of local worker `local_index` (`u64::MAX` = finished),
    /// and notes when the process's minute frontier first moves past a new minute.
    pub fn set_watermark(&self, local_index: usize, ms: u64) {
        let Some(slot) = self.watermarks.get(local_index) else {
            return;
        };
        if slot.swap(ms, Relaxed) / MINUTE_MS == ms / MINUTE_MS {
            return; // same minute: the frontier cannot have moved
        }
        let Some(frontier) = self.frontier_ms() else { return };
        let mut marks = lock(&self.frontier_passed);
        if marks.back().is_none_or(|(f, _)| frontier > *f) {
            marks.push_back((frontier, Instant::now()));
            if marks.len() > FRONTIER_MARKS {
                marks.pop_front();
            }
        }
    }

    /// The smallest running worker watermark floored to the minute: what the sources'
    /// capabilities hold back. `None` before every worker has a watermark; `u64::MAX` once
    /// all have finished, which closes every remaining window at that moment (the end of
    /// a replay), so their emit latency counts from the end of the input.
    fn frontier_ms(&self) -> Option<u64> {
        let mut min = u64::MAX;
        for w in &self.watermarks {
            match w.load(Relaxed) {
                0 => return None,
                ms => min = min.min(ms),
            }
        }
        Some(if min == u64::MAX {
            u64::MAX
        } else {
            min / MINUTE_MS * MINUTE_MS
        })
    }

    /// Records the emit latency of the windows ending at `end_ms`, emitted now: the time
    /// since this process's frontier passed `end_ms`. With several processes the frontier
    /// of the others is not seen here, so the figure can only err long, never short.
    pub fn record_emit(&self, end_ms: u64) {
        let passed = {
            let marks = lock(&self.frontier_passed);
            let i = marks.partition_point(|(f, _)| *f <= end_ms);
            marks.get(i).map(|(_, at)| *at)
        };
        if let Some(at) = passed {
            self.emit_latency.record(at.elapsed());
        }
    }

    /// The watermark-to-emit latency histogram.
    pub fn emit_latency(&self) -> &LatencyHistogram {
        &self.emit_latency
    }

    /// Publishes the consumer lag of one Kafka partition.
    pub fn set_partition_lag(&self, partition: i32, lag: u64) {
        lock(&self.partition_lag).insert(partition, lag);
    }

    /// Consumer lag per partition, for the `{partition}` gauge.
    pub fn partition_lags(&self) -> Vec<(i32, u64)> {
        lock(&self.partition_lag).iter().map(|(p, l)| (*p, *l)).collect()
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
            state_records: self.state_records.load(Relaxed),
            stations_live: self.stations_live.iter().map(|s| s.load(Relaxed)).sum(),
            bytes_read: self.bytes_read.load(Relaxed),
            watermark_ms: marks.min().filter(|&w| w > 0),
            consumer_lag: lock(&self.partition_lag).values().copied().reduce(|a, b| a + b),
            windows_acked: self.windows_acked.load(Relaxed),
            ack_latency: self.ack_latency.quantile(0.5).zip(self.ack_latency.quantile(0.99)),
            emit_latency: self.emit_latency.quantile(0.5).zip(self.emit_latency.quantile(0.99)),
            emit_latency_max: self.emit_latency.max(),
            step_age_ms: {
                let oldest = self.stepped.iter().map(|s| s.load(Relaxed)).min();
                oldest
                    .filter(|&t| t > 0)
                    .map(|t| crate::schema::now_ms().saturating_sub(t))
            },
        }
    }

    /// Notes that local worker `local_index` finished a step (or a park) now.
    pub fn note_step(&self, local_index: usize, now_ms: u64) {
        if let Some(slot) = self.stepped.get(local_index) {
            slot.store(now_ms, Relaxed);
        }
    }
}

/// Locks a metrics mutex. A poisoned one only means a worker panicked while holding it;
/// the plain numbers inside are still valid, and metrics must not cascade the panic.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
        assert_eq!(h.max(), Some(Duration::from_millis(100)));
        h.record(Duration::from_secs(3600));
        assert!(h.quantile(1.0).unwrap() >= Duration::from_secs(16));
        assert_eq!(h.max(), Some(Duration::from_secs(3600)));
    }

    #[test]
    fn windows_emitted_after_the_input_ends_count_from_its_end() {
        let m = Metrics::new(2);
        m.set_watermark(0, 5 * MINUTE_MS);
        m.record_emit(MINUTE_MS); // the frontier is unknown until every worker reports
        assert_eq!(m.emit_latency().max(), None);
        m.set_watermark(1, 3 * MINUTE_MS);
        m.record_emit(2 * MINUTE_MS); // passed when worker 1 reached minute 3
        assert!(m.emit_latency().max().is_some());
        m.record_emit(90 * MINUTE_MS); // not closed yet: not recorded
        let recorded = m.emit_latency().rebucket(&[]).1;
        assert_eq!(recorded, 1);
        m.set_watermark(0, u64::MAX);
        m.set_watermark(1, u64::MAX);
        m.record_emit(90 * MINUTE_MS); // closed by the end of the input
        assert_eq!(m.emit_latency().rebucket(&[]).1, 2);
    }
}
