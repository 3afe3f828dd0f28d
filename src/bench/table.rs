//! The bench's human-readable output: a row per run as it finishes, then the medians and
//! the memory per added station.

use std::io::{self, Write};

use super::BenchResult;
use super::report::RunRow;

/// `1234567.8` → `1.23 M`, `45678` → `45.7 k`: rates at a glance.
fn si(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn mb(bytes: Option<f64>) -> String {
    bytes.map_or("-".into(), |b| format!("{:.0} MB", b / 1e6))
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or("-".into(), f)
}

/// The column headings.
pub fn header(out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "{:<9} {:>8} {:>2} {:>3} {:>9} {:>7} {:>9} {:>9} {:>7} {:>9} {:>8} {:>8} {:>26} {:>5}",
        "source",
        "stations",
        "w",
        "ml",
        "readings",
        "wall s",
        "events/s",
        "ev/CPU-s",
        "CPU s",
        "windows/s",
        "peak RSS",
        "RSS/stn",
        "watermark→emit p50/p99/max",
        "lag"
    )
}

/// One finished run.
pub fn row(out: &mut dyn Write, r: &RunRow) -> io::Result<()> {
    let m = &r.measured;
    let ms = |v: Option<f64>| opt(v, |v| format!("{v:.1}"));
    let latency = format!("{}/{}/{} ms", ms(m.emit_p50_ms), ms(m.emit_p99_ms), ms(m.emit_max_ms));
    writeln!(
        out,
        "{:<9} {:>8} {:>2} {:>3} {:>9} {:>7.2} {:>9} {:>9} {:>7} {:>9} {:>8} {:>8} {:>26} {:>5}",
        r.source,
        r.stations,
        r.workers,
        if r.ml { "on" } else { "off" },
        m.readings,
        m.wall_s,
        si(r.events_per_s),
        opt(r.events_per_cpu_s, si),
        opt(m.cpu_s, |c| format!("{c:.1}")),
        si(r.windows_per_s),
        mb(m.peak_rss_bytes.map(|b| b as f64)),
        opt(r.rss_per_station_bytes, |b| format!("{:.1} KiB", b / 1024.0)),
        latency,
        m.consumer_lag.map_or("-".into(), |l| l.to_string()),
    )
}

/// Medians (when runs repeat) and the memory one more station costs (when station
/// counts vary).
pub fn summary(out: &mut dyn Write, result: &BenchResult) -> io::Result<()> {
    if result.medians.iter().any(|m| m.runs > 1) {
        writeln!(out, "\nmedians")?;
        writeln!(
            out,
            "{:>8} {:>2} {:>4} {:>9} {:>9} {:>9} {:>8} {:>9}",
            "stations", "w", "runs", "events/s", "ev/CPU-s", "windows/s", "peak RSS", "p99 ms"
        )?;
        for m in &result.medians {
            writeln!(
                out,
                "{:>8} {:>2} {:>4} {:>9} {:>9} {:>9} {:>8} {:>9}",
                m.stations,
                m.workers,
                m.runs,
                si(m.events_per_s),
                opt(m.events_per_cpu_s, si),
                si(m.windows_per_s),
                mb(m.peak_rss_bytes),
                opt(m.emit_p99_ms, |v| format!("{v:.1}")),
            )?;
        }
    }
    if !result.marginal_memory.is_empty() {
        writeln!(out, "\nmemory per added station (slope of peak RSS)")?;
        for m in &result.marginal_memory {
            writeln!(
                out,
                "  -w {}: {} → {} stations: {:.2} KiB per station",
                m.workers,
                m.from_stations,
                m.to_stations,
                m.bytes_per_station / 1024.0
            )?;
        }
    }
    if result.interrupted {
        writeln!(
            out,
            "\n(interrupted: the runs above are complete, the rest did not run)"
        )?;
    }
    Ok(())
}

/// The live progress line of a run.
pub fn progress(label: &str, readings: u64, expected: Option<u64>, rate: u64, windows: u64) -> String {
    let share = expected
        .filter(|e| *e > 0)
        .map(|e| format!(" ({:.0} %)", readings as f64 * 100.0 / e as f64))
        .unwrap_or_default();
    format!(
        "{label}: {readings} readings{share}, {}/s, {windows} windows",
        si(rate as f64)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_at_a_glance() {
        assert_eq!(si(1_234_567.0), "1.23 M");
        assert_eq!(si(45_678.0), "45.7 k");
        assert_eq!(si(12.0), "12");
        assert_eq!(
            progress("run 1/2", 500, Some(1000), 2_000_000, 7),
            "run 1/2: 500 readings (50 %), 2.00 M/s, 7 windows"
        );
        assert_eq!(progress("x", 5, None, 0, 0), "x: 5 readings, 0/s, 0 windows");
    }
}
