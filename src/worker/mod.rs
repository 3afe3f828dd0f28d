//! The per-worker context: what every operator of a worker may need from the run that
//! hosts it, and the typed errors through which an operator stops that run.
//!
//! It is deliberately small. Sources and sinks both take it, so it holds only what is
//! common to all operators: the process's counters, the pacing probe, the stop flag and
//! the failure slot. Anything particular to one side (a consumer, the producer) is handed
//! to that side's constructor instead.

mod fatal;

pub use fatal::{FailureSlot, Fatal, Retry};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use timely::dataflow::ProbeHandle;

use crate::metrics::Metrics;

/// What the operators of one worker share: counters, pacing, the stop flag and the
/// failure slot. Sources read it to pace themselves and to stop; sinks to report a fatal
/// error.
#[derive(Clone)]
pub struct WorkerContext {
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
    pub failure: FailureSlot,
    /// Set when a stop was requested: unbounded sources stop reading, so the sinks can
    /// drain and the last offsets be committed.
    pub stop: Arc<AtomicBool>,
}

impl WorkerContext {
    /// Records a fatal error (an unreadable input, an unwritable output). The run stops
    /// and the process exits non-zero: continuing would silently lose data.
    pub fn fail(&self, fatal: Fatal) {
        self.failure.set(fatal);
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

    /// [`WorkerContext::may_send`] for a source that knows where its own data began
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
