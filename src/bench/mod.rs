//! `weatherflow bench`: throughput, latency, CPU and memory of the job, measured honestly.
//!
//! Every run is a fresh `weatherflow run` child process, so one run's heap, page cache
//! warm-up or thread pool never flatters the next, and a worker count is measured as a
//! user would start it. The child runs with `--bench-report FILE` and measures itself at
//! the end ([`report::ChildReport`]); the parent follows the child's JSON progress log to
//! show a live progress line, and collects, tabulates and writes the results.
//!
//! Runs alternate between worker counts within a repetition (1, 2, 4, 1, 2, 4, …) rather
//! than repeating one count back to back, so a slow spell of a shared machine hits every
//! count alike; the summary reports medians.
//!
//! With `--source kafka` the bench first fills a fresh topic with generated readings
//! (`weatherflow produce`, also a child), then each run reads it from the beginning with
//! a fresh consumer group and `--stop-at-end`, so every run sees the same input and ends
//! when it has read it, not after an idle timeout.

pub mod report;
mod table;

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::{BenchConfig, BenchSource};
use crate::schema::format_rfc3339;
use report::{ChildReport, MarginalRow, MedianRow, RunRow, marginals, medians};

/// Event time of the first generated reading: fixed, so every run sees the same input.
const GENERATOR_START: &str = "2026-11-20T00:00:00Z";
/// Progress lines kept from a child to explain its failure.
const TAIL_LINES: usize = 30;
/// How often a child logs progress (and the bench's progress line moves).
const CHILD_PROGRESS: &str = "1s";

/// Why a bench failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The binary to run could not be found or started.
    #[error("cannot start {what}: {source}")]
    Spawn {
        /// What was being started.
        what: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A child run failed.
    #[error("{what} failed ({status}); its last log lines:\n{tail}")]
    Child {
        /// Which run.
        what: String,
        /// How it exited.
        status: ExitStatus,
        /// The end of its log.
        tail: String,
    },
    /// A child's report could not be written or read.
    #[error("bench report {path}: {reason}")]
    Report {
        /// The report file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The results could not be written.
    #[error("cannot write the results to {path}: {source}")]
    Output {
        /// Where.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Everything a bench measured, as written by `--json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    /// When the bench started (RFC 3339, UTC).
    pub started: String,
    /// The program version.
    pub version: String,
    /// CPUs available to the bench.
    pub cpus: usize,
    /// The bench's command line.
    pub command: Vec<String>,
    /// Every run, in the order they ran.
    pub runs: Vec<RunRow>,
    /// Medians per (stations, workers).
    pub medians: Vec<MedianRow>,
    /// Memory per added station, between consecutive station counts.
    pub marginal_memory: Vec<MarginalRow>,
    /// Extra `run` flags every run had.
    pub run_args: Vec<String>,
    /// True when Ctrl-C ended the bench early.
    pub interrupted: bool,
}

/// Runs the bench. The table goes to stdout (stderr when the JSON does), row by row as
/// runs finish; progress goes to stderr.
pub fn bench(config: &BenchConfig, stop: &AtomicBool) -> Result<BenchResult, BenchError> {
    let exe = std::env::current_exe().map_err(|source| BenchError::Spawn {
        what: "the weatherflow binary (current_exe)".into(),
        source,
    })?;
    let json_to_stdout = config.json.as_deref() == Some(Path::new("-"));
    let mut table: Box<dyn Write> = if json_to_stdout {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    let started_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut result = BenchResult {
        started: format_rfc3339(started_at.as_millis() as u64),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        command: std::env::args().collect(),
        runs: Vec::new(),
        medians: Vec::new(),
        marginal_memory: Vec::new(),
        run_args: config.run_args.clone(),
        interrupted: false,
    };
    let _ = table::header(&mut table);
    let total = config.stations.len() * config.repeat * config.workers.len();
    let mut done = 0;
    'all: for &stations in &config.stations {
        let topic = match &config.source {
            BenchSource::Kafka { .. } => Some(load_topic(&exe, config, stations, started_at.as_secs(), stop)?),
            _ => None,
        };
        for run in 1..=config.repeat {
            for &workers in &config.workers {
                if stop.load(Ordering::Relaxed) {
                    result.interrupted = true;
                    break 'all;
                }
                done += 1;
                let label = format!("run {done}/{total}: {stations} stations, -w {workers}");
                let spec = RunSpec {
                    stations,
                    workers,
                    topic: topic.as_deref(),
                    group: format!("weatherflow-bench-{}-{done}", started_at.as_secs()),
                };
                let measured = match run_child(&exe, config, &spec, &label, stop)? {
                    Some(m) if !m.interrupted => m,
                    _ => {
                        result.interrupted = true;
                        break 'all;
                    }
                };
                let row = RunRow::new(config.source.name(), stations, workers, config.ml, run, measured);
                let _ = table::row(&mut table, &row);
                result.runs.push(row);
            }
        }
    }
    result.medians = medians(&result.runs);
    result.marginal_memory = marginals(&result.medians);
    let _ = table::summary(&mut table, &result);
    if let Some(path) = &config.json {
        let text = serde_json::to_string_pretty(&result).map_err(|e| BenchError::Report {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let written = if json_to_stdout {
            writeln!(std::io::stdout(), "{text}")
        } else {
            std::fs::write(path, text + "\n")
        };
        written.map_err(|source| BenchError::Output {
            path: path.clone(),
            source,
        })?;
    }
    Ok(result)
}

/// One run's shape.
struct RunSpec<'a> {
    stations: u64,
    workers: usize,
    /// The loaded topic (Kafka source).
    topic: Option<&'a str>,
    /// A consumer group no earlier run has committed to.
    group: String,
}

/// Arguments shared by every generator-fed child (`run` and `produce`).
fn generator_args(args: &mut Vec<OsString>, stations: u64, events: u64, interval: Duration, seed: u64) {
    for (flag, value) in [
        ("--stations", stations.to_string()),
        ("--events", events.to_string()),
        ("--interval", format!("{}ms", interval.as_millis())),
        ("--seed", seed.to_string()),
        ("--start", GENERATOR_START.to_owned()),
    ] {
        args.push(flag.into());
        args.push(value.into());
    }
}

/// The topic names of a Kafka bench: fresh per bench and station count, so reruns never
/// read each other's data.
fn kafka_topic_args(args: &mut Vec<OsString>, brokers: &str, topic: &str) {
    for (flag, value) in [
        ("--brokers", brokers.to_owned()),
        ("--topic", topic.to_owned()),
        ("--features-topic", format!("{topic}-features")),
        ("--predictions-topic", format!("{topic}-predictions")),
        ("--dlq-topic", format!("{topic}-dlq")),
        ("--checkpoint-topic", format!("{topic}-checkpoints")),
    ] {
        args.push(flag.into());
        args.push(value.into());
    }
}

/// Fills a fresh topic with the generated readings every Kafka run then reads.
fn load_topic(
    exe: &Path,
    config: &BenchConfig,
    stations: u64,
    bench_id: u64,
    stop: &AtomicBool,
) -> Result<String, BenchError> {
    let BenchSource::Kafka {
        brokers,
        partitions,
        events,
        interval,
        seed,
        no_faults,
    } = &config.source
    else {
        return Ok(String::new());
    };
    let topic = format!("weatherflow-bench-{bench_id}-{}-{stations}", std::process::id());
    let mut args: Vec<OsString> = vec!["produce".into(), "--from".into(), "generator".into()];
    kafka_topic_args(&mut args, brokers, &topic);
    generator_args(&mut args, stations, *events, *interval, *seed);
    args.extend(["--partitions".into(), partitions.to_string().into()]);
    if *no_faults {
        args.push("--no-faults".into());
    }
    let label = format!("loading {events} readings of {stations} stations into {topic}");
    let started = Instant::now();
    spawn_following(exe, &args, &label, None, stop)?;
    eprintln!("{label}: done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(topic)
}

/// Runs one `weatherflow run` child and returns its report; `None` when Ctrl-C ended it
/// before it could write one.
fn run_child(
    exe: &Path,
    config: &BenchConfig,
    spec: &RunSpec<'_>,
    label: &str,
    stop: &AtomicBool,
) -> Result<Option<ChildReport>, BenchError> {
    let report_path = std::env::temp_dir().join(format!(
        "weatherflow-bench-{}-{}-{}.json",
        std::process::id(),
        spec.stations,
        spec.workers
    ));
    let _ = std::fs::remove_file(&report_path);
    let mut args: Vec<OsString> = vec![
        "run".into(),
        "-w".into(),
        spec.workers.to_string().into(),
        "--no-api".into(),
        "--bench-report".into(),
        report_path.clone().into(),
        "--models".into(),
        config.models.clone().into(),
        // A benchmark measures all the stations of its input (a file's station count only
        // labels the run): none may be refused for the cap.
        "--max-stations".into(),
        usize::MAX.to_string().into(),
    ];
    // Results leave the dataflow serialised, as in production; /dev/null keeps the disk
    // out of the figure. A Kafka run writes to the bench's output topics instead.
    let local_output = !matches!(config.source, BenchSource::Kafka { .. });
    if local_output {
        args.extend(["--output".into(), "/dev/null".into()]);
    }
    if !config.ml {
        args.push("--no-ml".into());
    } else if local_output {
        args.extend(["--predictions".into(), "/dev/null".into()]);
    }
    let expected = match &config.source {
        BenchSource::Generator {
            events,
            interval,
            seed,
            no_faults,
            speed,
        } => {
            args.extend([
                "--source".into(),
                "generator".into(),
                "--speed".into(),
                speed.to_string().into(),
            ]);
            generator_args(&mut args, spec.stations, *events, *interval, *seed);
            if *no_faults {
                args.push("--no-faults".into());
            }
            Some(*events)
        }
        BenchSource::File { inputs } => {
            args.extend([
                "--source".into(),
                "file".into(),
                "--input".into(),
                inputs.join(",").into(),
            ]);
            None
        }
        BenchSource::Kafka { brokers, events, .. } => {
            args.extend(["--source".into(), "kafka".into(), "--stop-at-end".into()]);
            args.extend(["--group".into(), spec.group.clone().into()]);
            kafka_topic_args(&mut args, brokers, spec.topic.unwrap_or_default());
            Some(*events)
        }
    };
    args.extend(config.run_args.iter().map(OsString::from));
    // The child gets the same Ctrl-C as the bench (one process group): it stops cleanly
    // and reports `interrupted`, or, at a second Ctrl-C, exits without a report.
    spawn_following(exe, &args, label, expected, stop)?;
    let report = ChildReport::read(&report_path);
    let _ = std::fs::remove_file(&report_path);
    match report {
        Err(_) if stop.load(Ordering::Relaxed) => Ok(None),
        other => other.map(Some),
    }
}

/// Progress of a child, as its JSON log reports it.
#[derive(Default)]
struct Follow {
    /// The last lines that were not progress, to explain a failure.
    tail: VecDeque<String>,
}

/// Starts a child with JSON logs on stderr, shows its progress on one line, and waits.
fn spawn_following(
    exe: &Path,
    args: &[OsString],
    label: &str,
    expected: Option<u64>,
    stop: &AtomicBool,
) -> Result<(), BenchError> {
    let mut command = Command::new(exe);
    command
        .args(args)
        .args(["--log-format", "json", "--progress-interval", CHILD_PROGRESS])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // The bench's own environment must not reconfigure its children behind its flags.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("WEATHERFLOW_") {
            command.env_remove(key);
        }
    }
    let mut child = command.spawn().map_err(|source| BenchError::Spawn {
        what: format!("{} ({label})", exe.display()),
        source,
    })?;
    let follow = Arc::new(Mutex::new(Follow::default()));
    let reader = child.stderr.take().map(|stderr| {
        let follow = follow.clone();
        let label = label.to_owned();
        std::thread::spawn(move || read_log(stderr, &label, expected, &follow))
    });
    let status = child.wait().map_err(|source| BenchError::Spawn {
        what: format!("waiting for {label}"),
        source,
    })?;
    if let Some(reader) = reader {
        let _ = reader.join();
    }
    if status.success() || stop.load(Ordering::Relaxed) {
        return Ok(());
    }
    let tail = follow
        .lock()
        .map(|f| f.tail.iter().cloned().collect::<Vec<_>>().join("\n"))
        .unwrap_or_default();
    Err(BenchError::Child {
        what: label.to_owned(),
        status,
        tail,
    })
}

/// Reads a child's log: progress records move the progress line, the rest is kept for
/// a failure report, and warnings are shown as they come.
fn read_log(stderr: impl std::io::Read, label: &str, expected: Option<u64>, follow: &Mutex<Follow>) {
    let tty = std::io::stderr().is_terminal();
    let mut last_line = Instant::now();
    let mut drew = false;
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        let parsed: Option<serde_json::Value> = serde_json::from_str(&line).ok();
        let fields = parsed.as_ref().and_then(|v| v.get("fields"));
        let message = fields.and_then(|f| f.get("message")).and_then(|m| m.as_str());
        if let (Some("progress"), Some(f)) = (message, fields) {
            let n = |k: &str| f.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
            let text = table::progress(label, n("readings"), expected, n("events_per_s"), n("windows"));
            if tty {
                eprint!("\r\x1b[K{text}");
                drew = true;
            } else if last_line.elapsed() >= Duration::from_secs(10) {
                // Logs and CI: a line every 10 s shows the run is alive without flooding.
                eprintln!("{text}");
                last_line = Instant::now();
            }
            continue;
        }
        let level = parsed.as_ref().and_then(|v| v.get("level")).and_then(|l| l.as_str());
        if matches!(level, Some("WARN" | "ERROR")) {
            if drew {
                eprint!("\r\x1b[K");
            }
            eprintln!("[{label}] {line}");
        }
        if let Ok(mut f) = follow.lock() {
            if f.tail.len() == TAIL_LINES {
                f.tail.pop_front();
            }
            f.tail.push_back(line);
        }
    }
    if drew {
        eprint!("\r\x1b[K");
    }
}
