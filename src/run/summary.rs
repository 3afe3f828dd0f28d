//! What a run reports: the periodic progress line and the summary at the end.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::metrics::Snapshot;
use crate::schema::format_rfc3339;

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
        writeln!(f, "  stations held     {}", t.stations_live)?;
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

pub(super) fn log_progress(previous: &Snapshot, now: &Snapshot, interval: Duration) {
    let rate = (now.records_in - previous.records_in) as f64 / interval.as_secs_f64();
    let watermark = now.watermark_ms.map(format_rfc3339).unwrap_or_else(|| "-".into());
    // Behind the wall clock only means something for live data; an accelerated generator
    // runs ahead of it, so a negative lag is not reported.
    let lag_s = now
        .watermark_ms
        .map(|w| (crate::schema::now_ms() as f64 - w as f64) / 1000.0)
        .filter(|l| *l >= 0.0);
    tracing::info!(
        events_per_s = rate.round() as u64,
        readings = now.records_in,
        windows = now.windows_emitted,
        late = now.late,
        invalid = now.invalid_total(),
        duplicates = now.duplicate,
        stations = now.stations_live,
        mb_read = now.bytes_read / 1_000_000,
        watermark = %watermark,
        watermark_lag_s = lag_s.map(|l| l.round() as i64),
        consumer_lag = now.consumer_lag,
        acked = now.windows_acked,
        worker_step_age_ms = now.step_age_ms,
        "progress"
    );
}
