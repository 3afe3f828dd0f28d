//! The reliability suite (issue 8): faults injected into a running pipeline against the
//! real broker, each scenario checked against a golden recompute of its input.
//!
//! Every scenario runs the real binary as child processes and reads `weather-features`
//! (and where it matters `weather-predictions`) back from the broker. The check folds the
//! output by (station_id, window_end) like an upserting consumer would and counts, instead
//! of asserting on the first difference, so the report can say how much went wrong:
//! windows missing, windows that should not exist, windows that differ from the golden
//! recompute, and repeats that differ from the first copy (the at-least-once contract
//! allows repeats, never different ones).
//!
//! The short versions run in CI. `WEATHERFLOW_RELIABILITY=long` scales them up (more
//! faults, more data); `scripts/reliability.sh` runs that and the ignored long-only
//! scenarios, and collects the reports that `RELIABILITY.md` tabulates. Each scenario
//! prints one `reliability-report {json}` line and, when `WEATHERFLOW_RELIABILITY_REPORT`
//! names a file, appends the JSON there.

mod crash;
mod outage;
mod poison;
mod slow_sink;
mod stop;
mod time;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use weatherflow::kafka::KafkaSettings;
use weatherflow::schema::{WindowFeatures, format_rfc3339};

use crate::broker::{Msg, Reader, topic_args};
use crate::common::{arg, replay, sorted_lines};

/// How long any single wait may take before the scenario fails.
pub const DEADLINE: Duration = Duration::from_secs(180);

/// A scenario's scratch folder (inputs, child logs). Kept, and named on stderr, when
/// `WEATHERFLOW_KEEP_TEST_DIRS` is set, to read the logs of a failed run.
pub fn workdir() -> tempfile::TempDir {
    let mut dir = tempfile::Builder::new()
        .prefix("reliability-")
        .tempdir()
        .expect("temp dir");
    if std::env::var_os("WEATHERFLOW_KEEP_TEST_DIRS").is_some() {
        dir.disable_cleanup(true);
        eprintln!("reliability: keeping {}", dir.path().display());
    }
    dir
}

/// Whether the long versions were asked for.
pub fn long() -> bool {
    std::env::var("WEATHERFLOW_RELIABILITY").is_ok_and(|v| v == "long")
}

/// The scale of a scenario written as one body with two tests: the short one runs in CI,
/// the long one is `#[ignore]`d and run by `scripts/reliability.sh`. (Scenarios whose long
/// size is cheap enough pick theirs with [`long`] inside one test instead.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    Short,
    Long,
}

/// A small deterministic generator for fault moments; the seed is printed with the report.
pub struct Dice(u64);

impl Dice {
    pub fn new(seed: u64) -> Dice {
        Dice(seed | 1)
    }
    /// The output size at which to inject the next of `left` faults, given `now` of
    /// `total` windows out: a random share (½ to 1½ of an even split) of what is left,
    /// so the faults spread over the whole stream at unpredictable points.
    pub fn next_fault(&mut self, now: usize, total: usize, left: usize) -> usize {
        let step = (total - now) as u64 / (left + 1) as u64;
        now + self.between(step / 2, step + step / 2).max(1) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo + 1)
    }
}

/// One scenario's figures, as RELIABILITY.md reports them.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub scenario: String,
    pub long: bool,
    /// Pipeline runs (processes started, counting every restart).
    pub runs: usize,
    /// Faults injected (kills, stops, poison records, ...).
    pub faults: usize,
    pub records_in: usize,
    pub windows_out: usize,
    pub missing: usize,
    pub unexpected: usize,
    pub wrong: usize,
    pub nonidentical_duplicates: usize,
    pub identical_duplicates: usize,
    /// Wall time from each fault to the first window the pipeline had not emitted before.
    pub recover_ms: Vec<u64>,
    /// Anything else worth reporting, by name.
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Report {
    pub fn new(scenario: &str) -> Report {
        Report {
            scenario: scenario.to_owned(),
            long: long(),
            ..Report::default()
        }
    }

    /// Adds the output check.
    pub fn with(mut self, check: &Check) -> Report {
        self.windows_out = check.distinct;
        self.missing = check.missing.len();
        self.unexpected = check.unexpected.len();
        self.wrong = check.wrong.len();
        self.nonidentical_duplicates = check.nonidentical.len();
        self.identical_duplicates = check.identical_repeats;
        self
    }

    /// Adds the check of the predictions against the uninterrupted run's.
    pub fn with_predictions(mut self, predicted: &Check) -> Report {
        for (name, value) in [
            ("predictions_out", predicted.distinct),
            ("predictions_missing", predicted.missing.len()),
            ("predictions_unexpected", predicted.unexpected.len()),
            ("predictions_differ_from_uninterrupted", predicted.wrong.len()),
            ("predictions_nonidentical_repeats", predicted.nonidentical.len()),
            ("predictions_identical_repeats", predicted.identical_repeats),
        ] {
            self.extra.insert(name.into(), value.into());
        }
        self
    }

    /// Prints the report and appends it to `WEATHERFLOW_RELIABILITY_REPORT`.
    pub fn emit(&self) {
        let json = serde_json::to_string(self).expect("report serialises");
        eprintln!("reliability-report {json}");
        if let Ok(path) = std::env::var("WEATHERFLOW_RELIABILITY_REPORT")
            && !path.is_empty()
        {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .expect("report file");
            writeln!(file, "{json}").expect("report written");
        }
    }
}

/// The folded output against the golden windows.
#[derive(Debug, Default)]
pub struct Check {
    /// Distinct (station, window_end) keys seen.
    pub distinct: usize,
    pub missing: Vec<(String, String)>,
    pub unexpected: Vec<(String, String)>,
    /// Present but different from the golden line.
    pub wrong: Vec<(String, String)>,
    /// Repeats that differ from the first copy.
    pub nonidentical: Vec<(String, String)>,
    pub identical_repeats: usize,
}

impl Check {
    /// Folds `messages` (keyed, with a `window_end` header) and compares with `want`.
    pub fn of(messages: &[Msg], want: &BTreeMap<(String, String), Vec<u8>>) -> Check {
        let mut check = Check::default();
        let mut folded: BTreeMap<(String, String), &[u8]> = BTreeMap::new();
        for m in messages {
            let key = window_key(m);
            match folded.get(&key) {
                Some(first) if *first == m.payload.as_slice() => check.identical_repeats += 1,
                Some(_) => check.nonidentical.push(key),
                None => {
                    folded.insert(key, &m.payload);
                }
            }
        }
        check.distinct = folded.len();
        for (key, line) in want {
            match folded.get(key) {
                None => check.missing.push(key.clone()),
                Some(got) if *got != line.as_slice() => check.wrong.push(key.clone()),
                Some(_) => {}
            }
        }
        check.unexpected = folded.keys().filter(|k| !want.contains_key(*k)).cloned().collect();
        check
    }

    /// Fails with the first few problems of each kind.
    pub fn assert_clean(&self, context: &str) {
        let few = |v: &[(String, String)]| v.iter().take(3).cloned().collect::<Vec<_>>();
        assert!(
            self.missing.is_empty()
                && self.unexpected.is_empty()
                && self.wrong.is_empty()
                && self.nonidentical.is_empty(),
            "{context}: {} missing {:?}, {} unexpected {:?}, {} differ from the golden {:?}, {} non-identical repeats {:?}",
            self.missing.len(),
            few(&self.missing),
            self.unexpected.len(),
            few(&self.unexpected),
            self.wrong.len(),
            few(&self.wrong),
            self.nonidentical.len(),
            few(&self.nonidentical),
        );
    }
}

/// The value of a Prometheus sample line `series value` in `/metrics` text.
pub fn sample(metrics: &str, series: &str) -> Option<u64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse::<f64>().ok()))
        .map(|v| v as u64)
}

/// (station_id, window_end) of an output message, from its key and header.
pub fn window_key(m: &Msg) -> (String, String) {
    let station = String::from_utf8_lossy(m.key.as_deref().expect("output records are keyed")).into_owned();
    let end = m.headers.get("window_end").expect("window_end header").clone();
    (station, end)
}

/// Counts distinct windows in a growing message list without rescanning it.
#[derive(Default)]
pub struct Progress {
    seen: RefCell<(usize, BTreeSet<(String, String)>)>,
}

impl Progress {
    pub fn distinct(&self, messages: &[Msg]) -> usize {
        let mut seen = self.seen.borrow_mut();
        let (done, set) = &mut *seen;
        for m in &messages[*done..] {
            set.insert(window_key(m));
        }
        *done = messages.len();
        set.len()
    }
}

/// Everything the topic holds now, as distinct windows: the baseline before a restart,
/// so that "a new window" really is one the previous run had not written.
pub fn settle(reader: &mut Reader, progress: &Progress) -> usize {
    reader.read_to_end();
    progress.distinct(&reader.messages)
}

/// Reads until at least `n` distinct windows are in; returns how long that took.
pub fn await_windows(reader: &mut Reader, progress: &Progress, n: usize, what: &str) -> Duration {
    let started = Instant::now();
    reader.until(DEADLINE, what, |m| progress.distinct(m) >= n);
    started.elapsed()
}

/// Generated readings as JSONL (no faults, so any interleaving of partitions gives the
/// same windows) and the windows a serial replay makes of them.
pub struct Golden {
    pub raw: PathBuf,
    pub lines: usize,
    pub windows: BTreeMap<(String, String), Vec<u8>>,
    /// The predictions of the same uninterrupted replay, by (station, window end).
    pub predictions: BTreeMap<(String, String), Vec<u8>>,
}

impl Golden {
    pub fn generate(dir: &Path, stations: u32, duration: &str, extra: &[&str]) -> Golden {
        let raw = dir.join("raw.jsonl");
        let mut args: Vec<String> = [
            "generate",
            "--stations",
            &stations.to_string(),
            "--duration",
            duration,
            "--seed",
            "11",
            "--start",
            "2026-11-20T00:00:00Z",
            "--no-faults",
            "--output",
            &arg(&raw),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        crate::common::run_binary(&args);
        Golden::of(dir, raw)
    }

    /// The golden windows of an existing JSONL file.
    pub fn of(dir: &Path, raw: PathBuf) -> Golden {
        let lines = std::fs::read(&raw)
            .expect("raw input")
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
        let out = dir.join("golden.jsonl");
        let predictions_out = dir.join("golden-predictions.jsonl");
        replay(&raw, &out, "1", &["--predictions", &arg(&predictions_out)]);
        let windows = sorted_lines(&out)
            .into_iter()
            .map(|line| {
                let w: WindowFeatures = serde_json::from_str(&line).expect("features line");
                ((w.station_id, format_rfc3339(w.window_end)), line.into_bytes())
            })
            .collect();
        let predictions = sorted_lines(&predictions_out)
            .into_iter()
            .map(|line| {
                let p: weatherflow::schema::Prediction = serde_json::from_str(&line).expect("prediction line");
                ((p.station_id, format_rfc3339(p.window_end)), line.into_bytes())
            })
            .collect();
        Golden {
            raw,
            lines,
            windows,
            predictions,
        }
    }
}

/// A child process whose stderr goes to a log file: a long run with warnings must never
/// block on a full pipe that nobody reads.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(args: &[String], log: PathBuf, env: &[(&str, &str)]) -> Proc {
        let file = File::create(&log).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_weatherflow"));
        if !args.iter().any(|a| a == "--api") {
            command.env("WEATHERFLOW_NO_API", "true");
        }
        command.env("RUST_LOG", "info");
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command
            .args(args)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("binary starts");
        Proc { child, log }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) for the exit; returns whether it succeeded and how long it took.
    pub fn wait(mut self, deadline: Duration) -> (bool, Duration) {
        let started = Instant::now();
        loop {
            match self.child.try_wait().expect("child status") {
                Some(status) => return (status.success(), started.elapsed()),
                None if started.elapsed() > deadline => {
                    let _ = self.child.kill();
                    panic!(
                        "pid {} did not exit within {deadline:?}; log tail:\n{}",
                        self.child.id(),
                        tail(&self.log_text(), 20)
                    );
                }
                // Polling a child's status has no blocking form with a deadline in std.
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scenario that fails half-way must not leave pipelines running (they would hold CPU
/// and broker connections for every later test).
impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last `n` lines of a log.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// SIGTERM to every process first, then waits: a timely process only finishes once its
/// peers do.
pub fn stop_all(procs: Vec<Proc>) -> Vec<Duration> {
    for p in &procs {
        crate::broker::signal(p.id(), "-TERM");
    }
    procs
        .into_iter()
        .map(|p| {
            let log = p.log.clone();
            let (ok, took) = p.wait(Duration::from_secs(60));
            assert!(
                ok,
                "a clean stop exits 0; log tail:\n{}",
                tail(&std::fs::read_to_string(log).unwrap_or_default(), 20)
            );
            took
        })
        .collect()
}

/// Starts `run --source kafka` on `settings`' topics, logging to `dir/name.log`.
pub fn pipeline(dir: &Path, name: &str, settings: &KafkaSettings, group: &str, extra: &[&str]) -> Proc {
    let mut args: Vec<String> = ["run", "--source", "kafka", "--commit-interval", "100ms"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    // Quick idleness, so windows close promptly once the input stops, unless the
    // scenario chooses its own.
    if !extra.contains(&"--idle-timeout") {
        args.extend(["--idle-timeout".to_owned(), "1s".to_owned()]);
    }
    args.extend(topic_args(settings, group));
    args.extend(extra.iter().map(|s| s.to_string()));
    Proc::spawn(&args, dir.join(format!("{name}.log")), &[])
}

/// `produce --from file` of `raw` into the raw topic at `rate` readings/s (0: unpaced).
pub fn producer(dir: &Path, settings: &KafkaSettings, raw: &Path, rate: u64) -> Proc {
    let args: Vec<String> = [
        "produce",
        "--from",
        "file",
        "--input",
        &arg(raw),
        "--brokers",
        &settings.brokers,
        "--topic",
        &settings.topics.raw,
        "--rate",
        &rate.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    Proc::spawn(&args, dir.join("producer.log"), &[])
}

/// Proves the raw topic holds every generated reading: per station, the generator's
/// `seq` numbers form 0..n without a gap. Returns (readings, stations, gaps).
pub fn seq_gaps(raw: &[Msg]) -> (usize, usize, usize) {
    let mut per_station: HashMap<String, BTreeSet<u64>> = HashMap::new();
    for m in raw {
        let v: serde_json::Value = serde_json::from_slice(&m.payload).expect("generator JSON");
        let station = v["station_id"].as_str().expect("station").to_owned();
        let seq = v["seq"].as_u64().expect("generator readings carry seq");
        per_station.entry(station).or_default().insert(seq);
    }
    let gaps = per_station
        .values()
        .map(|s| (s.last().map_or(0, |l| l + 1) as usize) - s.len())
        .sum();
    (raw.len(), per_station.len(), gaps)
}
