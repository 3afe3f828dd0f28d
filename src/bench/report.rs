//! What one bench run measured: the child's own report, and the row the bench prints.
//!
//! The child (`weatherflow run --bench-report FILE`) measures itself at the end of the
//! run: its counters, wall time, CPU time and peak RSS. Measuring inside the child, rather
//! than around it, keeps process start and exit out of the figures and reads CPU and
//! memory from the kernel's own per-process accounting (every thread, librdkafka's
//! included), which is exact where sampling from outside is not.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::BenchError;
use crate::run::Summary;

/// Linux's `USER_HZ`: the unit of CPU times in `/proc/<pid>/stat`. It is 100 on every
/// architecture Linux supports for user space (the kernel converts to it), so it is not
/// read from `sysconf`, which would need `unsafe` FFI.
const USER_HZ: f64 = 100.0;

/// Written by the child at the end of its run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChildReport {
    /// Readings accepted into the dataflow.
    pub readings: u64,
    /// Readings rejected as invalid.
    pub invalid: u64,
    /// Late readings dropped.
    pub late: u64,
    /// Duplicate readings removed.
    pub duplicates: u64,
    /// Windows emitted.
    pub windows: u64,
    /// Predictions made.
    pub predictions: u64,
    /// Wall time of the run, from the start of `run` to its summary, seconds.
    pub wall_s: f64,
    /// User plus system CPU time of the whole process, seconds (`None` off Linux).
    pub cpu_s: Option<f64>,
    /// Peak resident set size, bytes (`VmHWM`; `None` off Linux).
    pub peak_rss_bytes: Option<u64>,
    /// Watermark passing a window's end → the window leaving the dataflow: median, ms.
    pub emit_p50_ms: Option<f64>,
    /// The same, 99th percentile, ms.
    pub emit_p99_ms: Option<f64>,
    /// The same, largest, ms.
    pub emit_max_ms: Option<f64>,
    /// Kafka consumer lag at the end, summed over partitions.
    pub consumer_lag: Option<u64>,
    /// Stopped by a signal rather than by the end of the input.
    pub interrupted: bool,
}

fn ms(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64() * 1e3)
}

impl ChildReport {
    /// The report of a finished run, with this process's CPU time and peak RSS.
    pub fn measure(summary: &Summary) -> Self {
        let t = &summary.totals;
        ChildReport {
            readings: t.records_in,
            invalid: t.invalid_total(),
            late: t.late,
            duplicates: t.duplicate,
            windows: t.windows_emitted,
            predictions: t.predictions,
            wall_s: summary.elapsed.as_secs_f64(),
            cpu_s: cpu_seconds(),
            peak_rss_bytes: peak_rss(),
            emit_p50_ms: ms(t.emit_latency.map(|l| l.0)),
            emit_p99_ms: ms(t.emit_latency.map(|l| l.1)),
            emit_max_ms: ms(t.emit_latency_max),
            consumer_lag: t.consumer_lag,
            interrupted: summary.interrupted,
        }
    }

    /// Writes the report as JSON.
    pub fn write(&self, path: &Path) -> Result<(), BenchError> {
        let text = serde_json::to_vec_pretty(self).map_err(|e| BenchError::Report {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        std::fs::write(path, text).map_err(|e| BenchError::Report {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Reads a report the child wrote.
    pub fn read(path: &Path) -> Result<Self, BenchError> {
        let report = |reason: String| BenchError::Report {
            path: path.to_owned(),
            reason,
        };
        let text = std::fs::read(path).map_err(|e| report(e.to_string()))?;
        serde_json::from_slice(&text).map_err(|e| report(e.to_string()))
    }
}

/// User plus system time of this process, all threads, from `/proc/self/stat`.
fn cpu_seconds() -> Option<f64> {
    parse_stat_cpu(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// Fields 14 and 15 (utime, stime) of a `stat` line, in seconds. The command name in
/// field 2 may hold spaces and parentheses, so fields are counted after its last `)`.
fn parse_stat_cpu(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11); // field 3 is the first after ')'
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// Peak RSS of this process, from `/proc/self/status`.
fn peak_rss() -> Option<u64> {
    parse_status_hwm(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// `VmHWM` of a `status` file, in bytes.
fn parse_status_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line["VmHWM:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// One run as the bench reports it: what ran, and what it measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRow {
    /// `generator`, `file` or `kafka`.
    pub source: String,
    /// Active stations.
    pub stations: u64,
    /// Worker threads.
    pub workers: usize,
    /// With the ML operators.
    pub ml: bool,
    /// Which repetition (1-based).
    pub run: usize,
    /// Readings per second of wall time.
    pub events_per_s: f64,
    /// Readings per CPU-second (user + system, all threads).
    pub events_per_cpu_s: Option<f64>,
    /// Windows emitted per second of wall time.
    pub windows_per_s: f64,
    /// Peak RSS divided by the active stations, bytes. An upper bound on the per-station
    /// cost: it includes the process's fixed memory (see the marginal figures).
    pub rss_per_station_bytes: Option<f64>,
    /// The child's own measurements.
    #[serde(flatten)]
    pub measured: ChildReport,
}

impl RunRow {
    /// Derives the rates of one run.
    pub fn new(source: &str, stations: u64, workers: usize, ml: bool, run: usize, measured: ChildReport) -> Self {
        let wall = measured.wall_s.max(1e-9);
        RunRow {
            source: source.to_owned(),
            stations,
            workers,
            ml,
            run,
            events_per_s: measured.readings as f64 / wall,
            events_per_cpu_s: measured
                .cpu_s
                .filter(|c| *c > 0.0)
                .map(|c| measured.readings as f64 / c),
            windows_per_s: measured.windows as f64 / wall,
            rss_per_station_bytes: measured.peak_rss_bytes.map(|b| b as f64 / stations as f64),
            measured,
        }
    }
}

/// The median of each figure over the repetitions of one (stations, workers) pair.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MedianRow {
    /// Active stations.
    pub stations: u64,
    /// Worker threads.
    pub workers: usize,
    /// Runs the medians are over.
    pub runs: usize,
    /// Readings per second.
    pub events_per_s: f64,
    /// Readings per CPU-second.
    pub events_per_cpu_s: Option<f64>,
    /// Windows per second.
    pub windows_per_s: f64,
    /// Peak RSS, bytes.
    pub peak_rss_bytes: Option<f64>,
    /// p99 watermark → emit, ms.
    pub emit_p99_ms: Option<f64>,
}

/// Memory one more active station costs: the slope of peak RSS between two station counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MarginalRow {
    /// Worker threads.
    pub workers: usize,
    /// The smaller station count.
    pub from_stations: u64,
    /// The larger station count.
    pub to_stations: u64,
    /// (peak RSS at `to` − at `from`) / (`to` − `from`), bytes, from the medians.
    pub bytes_per_station: f64,
}

/// The median of some values; `None` when empty.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// Medians per (stations, workers), in first-seen order.
pub fn medians(rows: &[RunRow]) -> Vec<MedianRow> {
    let mut keys: Vec<(u64, usize)> = Vec::new();
    for r in rows {
        if !keys.contains(&(r.stations, r.workers)) {
            keys.push((r.stations, r.workers));
        }
    }
    keys.into_iter()
        .map(|(stations, workers)| {
            let group: Vec<&RunRow> = rows
                .iter()
                .filter(|r| r.stations == stations && r.workers == workers)
                .collect();
            let of = |f: &dyn Fn(&RunRow) -> Option<f64>| median(group.iter().filter_map(|r| f(r)).collect());
            MedianRow {
                stations,
                workers,
                runs: group.len(),
                events_per_s: of(&|r| Some(r.events_per_s)).unwrap_or(0.0),
                events_per_cpu_s: of(&|r| r.events_per_cpu_s),
                windows_per_s: of(&|r| Some(r.windows_per_s)).unwrap_or(0.0),
                peak_rss_bytes: of(&|r| r.measured.peak_rss_bytes.map(|b| b as f64)),
                emit_p99_ms: of(&|r| r.measured.emit_p99_ms),
            }
        })
        .collect()
}

/// The memory slope between consecutive station counts, per worker count.
pub fn marginals(medians: &[MedianRow]) -> Vec<MarginalRow> {
    let mut out = Vec::new();
    let mut workers: Vec<usize> = medians.iter().map(|m| m.workers).collect();
    workers.dedup();
    workers.sort_unstable();
    workers.dedup();
    for w in workers {
        let mut points: Vec<(u64, f64)> = medians
            .iter()
            .filter(|m| m.workers == w)
            .filter_map(|m| Some((m.stations, m.peak_rss_bytes?)))
            .collect();
        points.sort_by_key(|p| p.0);
        for pair in points.windows(2) {
            let ((s0, r0), (s1, r1)) = (pair[0], pair[1]);
            if s1 > s0 {
                out.push(MarginalRow {
                    workers: w,
                    from_stations: s0,
                    to_stations: s1,
                    bytes_per_station: (r1 - r0) / (s1 - s0) as f64,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_counts_fields_after_the_command_name() {
        // A command name with a space and a parenthesis, as `comm` may hold.
        let stat = "4242 (weird) name) R 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 9 0 100 2000 300";
        assert_eq!(parse_stat_cpu(stat), Some(3.0));
        assert_eq!(parse_stat_cpu("garbage"), None);
    }

    #[test]
    fn status_hwm_is_read_in_bytes() {
        let status = "Name:\tweatherflow\nVmPeak:\t  999 kB\nVmHWM:\t  181240 kB\nVmRSS:\t  1 kB\n";
        assert_eq!(parse_status_hwm(status), Some(181_240 * 1024));
        assert_eq!(parse_status_hwm("Name: x\n"), None);
    }

    #[test]
    fn this_process_can_be_measured() {
        assert!(cpu_seconds().is_some_and(|c| c >= 0.0));
        assert!(peak_rss().is_some_and(|b| b > 1 << 20));
    }

    fn row(stations: u64, workers: usize, run: usize, readings: u64, rss: u64) -> RunRow {
        let measured = ChildReport {
            readings,
            invalid: 0,
            late: 0,
            duplicates: 0,
            windows: readings / 6,
            predictions: 0,
            wall_s: 2.0,
            cpu_s: Some(4.0),
            peak_rss_bytes: Some(rss),
            emit_p50_ms: Some(1.0),
            emit_p99_ms: Some(run as f64),
            emit_max_ms: Some(9.0),
            consumer_lag: None,
            interrupted: false,
        };
        RunRow::new("generator", stations, workers, false, run, measured)
    }

    #[test]
    fn rows_derive_rates_and_medians_group_by_pair() {
        let r = row(1000, 2, 1, 2_000_000, 100 << 20);
        assert_eq!(r.events_per_s, 1_000_000.0);
        assert_eq!(r.events_per_cpu_s, Some(500_000.0));
        assert!((r.windows_per_s - 166_666.5).abs() < 1.0);
        let rows = vec![
            row(1000, 1, 1, 100, 1000),
            row(1000, 2, 1, 300, 2000),
            row(1000, 1, 2, 200, 3000),
            row(1000, 1, 3, 900, 2000),
            row(1000, 2, 2, 500, 4000),
        ];
        let m = medians(&rows);
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].workers, m[0].runs), (1, 3));
        assert_eq!(m[0].events_per_s, 100.0); // median of 50, 100, 450 readings/s
        assert_eq!(m[0].peak_rss_bytes, Some(2000.0));
        assert_eq!(m[1].events_per_s, 200.0); // mean of 150 and 250: an even count
        assert_eq!(m[1].emit_p99_ms, Some(1.5));
    }

    #[test]
    fn marginal_memory_is_the_slope_between_station_counts() {
        let rows = vec![
            row(1_000, 2, 1, 1, 100_000_000),
            row(10_000, 2, 1, 1, 127_000_000),
            row(100_000, 2, 1, 1, 397_000_000),
            row(1_000, 1, 1, 1, 90_000_000),
        ];
        let m = marginals(&medians(&rows));
        assert_eq!(m.len(), 2);
        assert_eq!((m[0].from_stations, m[0].to_stations), (1_000, 10_000));
        assert_eq!(m[0].bytes_per_station, 3_000.0);
        assert_eq!(m[1].bytes_per_station, 3_000.0);
    }

    #[test]
    fn reports_round_trip_through_json() {
        let dir = std::env::temp_dir().join(format!("wf-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.json");
        let r = row(10, 1, 1, 60, 1 << 20).measured;
        r.write(&path).unwrap();
        assert_eq!(ChildReport::read(&path).unwrap(), r);
        std::fs::write(&path, b"{").unwrap();
        assert!(ChildReport::read(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
