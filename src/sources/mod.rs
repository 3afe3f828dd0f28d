//! Sources: where readings enter the dataflow, and where event time is decided.
//!
//! Every source sends a reading at the timely time of its event minute
//! (`floor_minute(timestamp_ms)`) and holds its capability at the minute of its watermark,
//! `max event time seen − lateness` (DESIGN §4). A reading older than the watermark is late:
//! it is counted and dropped, because the windows it belongs to may already be closed.
//! Invalid readings are counted by reason and never enter the dataflow.
//!
//! Sources also pace themselves against a probe at the end of the dataflow: a worker does
//! not run more than `--max-ahead` ([`DEFAULT_MAX_AHEAD_MS`]) of event time ahead of the slowest part of the
//! cluster. Timely has no backpressure between operators; without this, a fast worker's
//! readings pile up downstream waiting for a slow worker's watermark (the pitfall the
//! issue describes for Flink and Bytewax).

pub mod file;
pub mod generator;
pub mod kafka;
pub mod open_meteo;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::ProbeHandle;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilderSession;

use crate::metrics::Metrics;
use crate::schema::{Reading, floor_minute};

/// How far (event time, ms) a source may run ahead of the dataflow's output frontier,
/// unless `--max-ahead` says otherwise.
pub const DEFAULT_MAX_AHEAD_MS: u64 = 30 * 60_000;

/// What every source needs from the worker that runs it.
#[derive(Clone)]
pub struct SourceContext {
    /// Counters for this process.
    pub metrics: Arc<Metrics>,
    /// Allowed lateness, ms.
    pub lateness_ms: u64,
    /// The output frontier of the dataflow, for pacing.
    pub probe: ProbeHandle<u64>,
    /// How far (event time, ms) this source may run ahead of `probe`.
    pub max_ahead_ms: u64,
    /// How far ahead of the wall clock a reading may be stamped; `None`: unchecked.
    pub max_future_ms: Option<u64>,
    /// This worker's index within its process, for per-worker metrics.
    pub local_index: usize,
    /// The first fatal error of any operator in this process; the run loop stops on it.
    pub failure: Arc<OnceLock<String>>,
    /// Set when a stop was requested: unbounded sources stop reading, so the sinks can
    /// drain and the last offsets be committed.
    pub stop: Arc<AtomicBool>,
}

impl SourceContext {
    /// Records a fatal error (an unreadable input, an unwritable output). The run stops
    /// and the process exits non-zero: continuing would silently lose data.
    pub fn fail(&self, message: String) {
        tracing::error!(error = %message, "fatal");
        let _ = self.failure.set(message);
    }

    /// Whether a stop was requested.
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The latest acceptable event time now: readings after it are `future_timestamp`.
    /// Sources take it once per batch; a limit a few milliseconds stale changes nothing.
    pub fn future_limit(&self) -> u64 {
        match self.max_future_ms {
            None => u64::MAX,
            Some(ahead) => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
                .saturating_add(ahead),
        }
    }

    /// [`SourceContext::may_send`] for a source that knows where its own data began
    /// (`start_ms`): before the cluster's frontier exists, it may still read only
    /// `--max-ahead` past that start. Without this, a source's first activation could
    /// read hours of backlog at once, which a slow sink would then have to hold.
    pub fn may_send_from(&self, ms: u64, start_ms: Option<u64>) -> bool {
        self.probe.with_frontier(|f| match f.first() {
            None | Some(0) => start_ms.is_none_or(|s| ms <= s.saturating_add(self.max_ahead_ms)),
            Some(&lowest) => ms <= lowest.saturating_add(self.max_ahead_ms),
        })
    }

    /// Whether data at event time `ms` may be sent now without running too far ahead.
    ///
    /// A frontier still at 0 means some worker has not started yet; the limit only makes
    /// sense once every source has established its watermark.
    pub fn may_send(&self, ms: u64) -> bool {
        self.probe.with_frontier(|f| match f.first() {
            None | Some(0) => true,
            Some(&lowest) => ms <= lowest.saturating_add(self.max_ahead_ms),
        })
    }
}

/// Sends `batch` (drained) at the times of the readings' event minutes, one session per
/// run of equal minutes. `batch` should be ordered by time, so the runs are long.
pub fn give_by_minute(
    output: &mut OutputBuilderSession<'_, u64, CapacityContainerBuilder<Vec<Reading>>>,
    cap: &Capability<u64>,
    batch: &mut Vec<Reading>,
) {
    while let Some(first) = batch.first() {
        let minute = floor_minute(first.timestamp_ms);
        let run = batch
            .iter()
            .take_while(|r| floor_minute(r.timestamp_ms) == minute)
            .count();
        output.session(&cap.delayed(&minute)).give_iterator(batch.drain(..run));
    }
}
