//! Scenario 3: the broker goes away. A private broker (its own port, so the shared one
//! keeps serving the other tests) is paused with SIGSTOP mid-stream while the producer
//! keeps writing, then continued. The pipeline must say so once in its log, answer 503 on
//! `/ready` during the outage and 200 after, resume unaided, and lose nothing: the
//! readings produced during the pause arrive after it, and none of them may be late.
//!
//! One body, two sizes: a 22 s pause in CI, 30 s in the long run. Both are long enough
//! that a source that let partitions turn idle during an outage (bug 2 of RELIABILITY.md)
//! would move the watermark to the wall clock and drop the backlog as late
//! ([`PAUSE_IDLE_TIMEOUT`]). 3b restarts the broker instead; 3c looks at the worker
//! threads and Ctrl-C during a pause.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use weatherflow::kafka::KafkaSettings;
use weatherflow::kafka::watch::STALL_AFTER;

use crate::broker::{Msg, Reader, signal};
use crate::common::free_port;
use crate::http;

use super::{
    Check, DEADLINE, Golden, Proc, Progress, Report, Size, await_windows, pipeline, producer, sample, stop_all,
};

/// A broker of our own from `scripts/test-broker.sh`, stopped when dropped.
pub struct PrivateBroker {
    pub address: String,
    port: u16,
    dir: PathBuf,
}

impl PrivateBroker {
    fn script(&self, action: &str) -> std::process::Output {
        Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test-broker.sh"))
            .arg(action)
            .env("KAFKA_PORT", self.port.to_string())
            .env("NISSHI_RUN_DIR", &self.dir)
            .output()
            .expect("test-broker.sh runs")
    }

    pub fn up(dir: &Path) -> PrivateBroker {
        let port = free_port();
        let broker = PrivateBroker {
            address: format!("127.0.0.1:{port}"),
            port,
            dir: dir.join("broker"),
        };
        broker.start();
        broker
    }

    pub fn start(&self) {
        let out = self.script("up");
        assert!(
            out.status.success(),
            "private broker: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn pid(&self) -> u32 {
        std::fs::read_to_string(self.dir.join("broker.pid"))
            .expect("broker pid file")
            .trim()
            .parse()
            .expect("pid")
    }

    /// SIGSTOP: the broker keeps its connections open and answers nothing, as a hung
    /// broker does. librdkafka sees no error for a minute or more.
    pub fn pause(&self) {
        signal(self.pid(), "-STOP");
    }

    /// SIGCONT after [`PrivateBroker::pause`].
    pub fn resume(&self) {
        signal(self.pid(), "-CONT");
    }

    pub fn down(&self) {
        let _ = self.script("down");
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("broker.pid")) {
            let _ = Command::new("kill").args(["-CONT", pid.trim()]).status();
        }
        self.down();
    }
}

/// What every outage scenario starts from: a broker of its own, generated input with its
/// golden windows, and fresh topics on that broker, named (and grouped) after the
/// scenario. The broker is declared before the folder so that it stops before the
/// folder holding its files is removed.
struct Stage {
    broker: PrivateBroker,
    golden: Golden,
    settings: KafkaSettings,
    name: &'static str,
    dir: tempfile::TempDir,
}

impl Stage {
    fn new(name: &'static str, stations: u32, duration: &str) -> Stage {
        let dir = super::workdir();
        let broker = PrivateBroker::up(dir.path());
        let golden = Golden::generate(dir.path(), stations, duration, &[]);
        let settings = crate::broker::fresh_topics(&broker.address, name, 4);
        Stage {
            broker,
            golden,
            settings,
            name,
            dir,
        }
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts `run -w 2` on the stage's topics with its API on a free port, and waits
    /// until `/ready` answers 200. Returns the process and the API port.
    fn ready_pipeline(&self, log: &str, extra: &[&str]) -> (Proc, u16) {
        let port = free_port();
        let api = format!("127.0.0.1:{port}");
        let mut args = vec!["-w", "2", "--api", &api];
        args.extend_from_slice(extra);
        let run = pipeline(self.dir(), log, &self.settings, self.name, &args);
        ready_becomes(port, 200, DEADLINE);
        (run, port)
    }

    /// A reader of the output topic, from its beginning.
    fn features(&self) -> Reader {
        Reader::new(&self.broker.address, &self.settings.topics.features)
    }

    /// Pauses the broker and waits until the pipeline behind `port` says so on `/ready`.
    /// Returns when the pause began and how long the pipeline took to notice.
    fn pause_until_unready(&self, port: u16) -> (Instant, Duration) {
        self.broker.pause();
        let paused = Instant::now();
        (paused, ready_becomes(port, 503, Duration::from_secs(20)))
    }
}

/// Polls `/ready` until its status is `want`; returns how long that took.
fn ready_becomes(port: u16, want: u16, within: Duration) -> Duration {
    let started = Instant::now();
    http::until(port, "/ready", within, |a| a.status == want);
    started.elapsed()
}

/// Asserts that `/ready` answers 503 on every poll until `length` has passed since
/// `since`: the outage is the scenario, so this loop runs for a stretch of time.
fn unready_for(port: u16, since: Instant, length: Duration) {
    while since.elapsed() < length {
        let a = http::get(port, "/ready");
        assert_eq!(a.status, 503, "/ready during the outage: {}", a.text());
        // Each request takes a moment; a short pause between them keeps the loop cheap.
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The event time of a raw reading.
fn event_ms(m: &Msg) -> u64 {
    weatherflow::schema::parse_json(&m.payload, 0)
        .expect("generated readings are valid")
        .timestamp_ms
}

/// The end of an output window, from its header.
fn window_end_ms(m: &Msg) -> u64 {
    weatherflow::schema::parse_rfc3339(&super::window_key(m).1).expect("window_end header")
}

/// The sizes of scenario 3.
struct PauseSize {
    stations: u32,
    duration: &'static str,
    /// Producer rate, readings/s. The input takes several times the pause to produce, so
    /// the producer is still writing when the broker stops and a backlog builds.
    rate: u64,
    /// How long the broker stays stopped.
    pause: Duration,
}

impl PauseSize {
    fn of(size: Size) -> PauseSize {
        match size {
            // 14 400 readings over about 14 s; the pause starts after about 2 s.
            Size::Short => PauseSize {
                stations: 20,
                duration: "2h",
                rate: 1_000,
                pause: Duration::from_secs(22),
            },
            Size::Long => PauseSize {
                stations: 40,
                duration: "3h",
                rate: 2_000,
                pause: Duration::from_secs(30),
            },
        }
    }
}

/// The pipeline's idle timeout in scenario 3: above the watch's detection time (about
/// 5 s), as in production (default 30 s), since partitions would otherwise fall quiet
/// before the outage is known. Both pauses exceed it by more than the time a paused
/// broker keeps partitions busy anyway (up to about 10 s: their pending log checks wait
/// for an answer), so that a source that ignored the outage would call every partition
/// idle well before the broker returns. (With a 16 s pause only some of them were.)
const PAUSE_IDLE_TIMEOUT: &str = "8s";

#[test]
#[cfg_attr(
    no_test_broker,
    ignore = "needs a Kafka broker: WEATHERFLOW_TEST_BROKERS=$(scripts/test-broker.sh up)"
)]
fn reliability_broker_paused_22s_ready_flips_and_nothing_is_lost() {
    if crate::broker::brokers().is_none() {
        return;
    }
    broker_paused(Size::Short);
}

#[test]
#[ignore = "long: 30 s broker pause; run by scripts/reliability.sh"]
fn reliability_broker_paused_30s_ready_flips_and_nothing_is_lost() {
    broker_paused(Size::Long);
}

fn broker_paused(size: Size) {
    let sized = PauseSize::of(size);
    let stage = Stage::new("pause", sized.stations, sized.duration);
    let golden = &stage.golden;
    let mut report = Report::new(&format!(
        "3. broker paused {} s (SIGSTOP/SIGCONT)",
        sized.pause.as_secs()
    ));
    report.long = size == Size::Long;
    let feed = producer(stage.dir(), &stage.settings, &golden.raw, sized.rate);
    let (run, port) = stage.ready_pipeline("run", &["--idle-timeout", PAUSE_IDLE_TIMEOUT]);
    let mut features = stage.features();
    let progress = Progress::default();
    let total = golden.windows.len();
    await_windows(&mut features, &progress, total / 8, "output before the pause");

    // The readings the broker holds when it stops. The rest, the backlog, is produced
    // during the pause and arrives after it, and all of it must count. A window ending a
    // minute past the latest reading held can only be made of the backlog.
    let (backlog, held_until) = {
        let mut raw = Reader::new(&stage.broker.address, &stage.settings.topics.raw);
        raw.read_to_end();
        let backlog = golden.lines - raw.messages.len();
        let held = raw.messages.iter().map(event_ms).max();
        (backlog, held.expect("readings before the pause"))
    };
    let (paused, detected) = stage.pause_until_unready(port);
    unready_for(port, paused, sized.pause);
    stage.broker.resume();
    let resumed = Instant::now();
    let ready_again = ready_becomes(port, 200, Duration::from_secs(60));
    // Each message is looked at once, as the last one read.
    features.until(DEADLINE, "a window of the backlog", |m| {
        m.last().is_some_and(|m| window_end_ms(m) > held_until + 60_000)
    });
    report.recover_ms.push(resumed.elapsed().as_millis() as u64);

    let (fed, _) = feed.wait(DEADLINE);
    assert!(fed, "the producer rode out the outage");
    // Once every reading is read, taken or dropped as late, the backlog's fate is known:
    // say so now rather than wait in vain for windows that lost their readings.
    let late = |m: &str| sample(m, "weatherflow_records_late_total").unwrap_or(0);
    let taken = |m: &str| sample(m, r#"weatherflow_records_in_total{source="kafka"}"#).unwrap_or(0);
    let metrics = http::until(port, "/metrics", DEADLINE, |a| {
        let m = a.text();
        (taken(&m) + late(&m)) as usize >= golden.lines
    })
    .text();
    let late = late(&metrics);
    assert_eq!(late, 0, "{late} readings arrived late and were dropped");
    await_windows(&mut features, &progress, total, "every window");
    let log_path = run.log.clone();
    stop_all(vec![run]);
    features.read_to_end();
    let log = std::fs::read_to_string(&log_path).expect("pipeline log");
    let told = log.matches("Kafka unreachable").count();
    let back = log.matches("Kafka reachable again").count();
    let noisy = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .count();
    let check = Check::of(&features.messages, &golden.windows);
    report.runs = 1;
    report.faults = 1;
    report.records_in = golden.lines;
    for (name, value) in [
        ("pause_ms", sized.pause.as_millis() as u64),
        ("backlog_readings", backlog as u64),
        ("ready_503_after_ms", detected.as_millis() as u64),
        ("ready_200_after_ms", ready_again.as_millis() as u64),
        ("warn_or_error_lines", noisy as u64),
    ] {
        report.extra.insert(name.into(), value.into());
    }
    report.extra.insert("late".into(), late.into());
    report = report.with(&check);
    report.emit();
    assert!(backlog > 0, "the producer was still writing when the broker stopped");
    assert_eq!((told, back), (1, 1), "the outage is logged once, its end once:\n{log}");
    assert!(noisy <= 10, "{noisy} warning/error lines for one outage:\n{log}");
    check.assert_clean("broker paused");
}

#[test]
#[cfg_attr(
    no_test_broker,
    ignore = "needs a Kafka broker: WEATHERFLOW_TEST_BROKERS=$(scripts/test-broker.sh up)"
)]
fn reliability_broker_restart_is_survived_unaided() {
    if crate::broker::brokers().is_none() {
        return;
    }
    broker_restart(false);
}

#[test]
#[ignore = "long: broker restart with the default 60 s stall timeout; run by scripts/reliability.sh"]
fn reliability_broker_restart_is_survived_unaided_long() {
    broker_restart(true);
}

/// Scenario 3b. The broker keeps its log in memory, so a restart loses every topic, and
/// with them the idempotent producer's identity: librdkafka then retries forever,
/// unacknowledged. What the pipeline must do, unaided: notice the outage (503, logged
/// once), rewind its source to the new logs, notice that its output stays unacknowledged
/// although the brokers answer, recreate its producer and send the unacknowledged records
/// again, and go on. Every window whose readings all arrived after the broker's restart
/// must then come out identical to the golden run, from the same process. Windows whose
/// readings straddle the restart cannot be right: half of their input is gone with the
/// broker. The short version (CI) uses a 5 s stall timeout, the long one the default 60 s.
fn broker_restart(long: bool) {
    let (stations, span) = if long { (30, "4h") } else { (20, "3h") };
    let stage = Stage::new("restart", stations, span);
    let (dir, broker, golden, settings) = (stage.dir(), &stage.broker, &stage.golden, &stage.settings);
    let text = std::fs::read_to_string(&golden.raw).expect("raw");
    let lines: Vec<&str> = text.lines().collect();
    let half = lines.len() / 2;
    let (first, second) = (dir.join("first.jsonl"), dir.join("second.jsonl"));
    std::fs::write(&first, lines[..half].join("\n") + "\n").expect("first half");
    std::fs::write(&second, lines[half..].join("\n") + "\n").expect("second half");
    let boundary = weatherflow::schema::parse_json(lines[half].as_bytes(), 0)
        .expect("valid")
        .timestamp_ms;

    let mut report = Report::new("3b. broker restart (in-memory log lost), survived unaided");
    let (fed, _) = producer(dir, settings, &first, 0).wait(DEADLINE);
    assert!(fed, "first half produced");
    let stall = if long { STALL_AFTER } else { Duration::from_secs(5) };
    let stall_arg = format!("{}s", stall.as_secs());
    // Historical input: partitions idle for longer than the idle timeout would let the
    // watermark follow the wall clock, and the second half would be late by design. 30 s
    // covers the gap between the halves.
    let args = [
        "--idle-timeout",
        "30s",
        "--stall-timeout",
        &stall_arg,
        "--progress-interval",
        "1s",
    ];
    let (run, port) = stage.ready_pipeline("run", &args);
    let mut features = stage.features();
    let progress = Progress::default();
    await_windows(
        &mut features,
        &progress,
        golden.windows.len() / 4,
        "output of the first half",
    );

    broker.down();
    let went = Instant::now();
    let detected = ready_becomes(port, 503, Duration::from_secs(20));
    broker.start();
    settings
        .ensure_topics(&settings.topics.all(), 4, Duration::from_secs(20))
        .expect("topics recreated");
    let back = Instant::now();
    let ready_again = ready_becomes(port, 200, Duration::from_secs(60));
    // Paced: the source can only tell a replaced log while it is shorter than what it had
    // read (nisshi has no leader epochs to tell it otherwise), and a real outage's new
    // log grows at the producers' pace. At 1 000 readings/s the new log needs about 10 s
    // to reach the old position; the source confirms every log within a second or two of
    // the brokers' return.
    let (fed, _) = producer(dir, settings, &second, 1_000).wait(DEADLINE);
    assert!(fed, "second half produced");

    // Windows ending more than 6 minutes after the restart point hold only readings from
    // the second half, and so does the window before them, which their trend compares to.
    let after = boundary + 6 * 60_000;
    let in_second = |end: &str| weatherflow::schema::parse_rfc3339(end).is_some_and(|e| e > after);
    let want: std::collections::BTreeMap<(String, String), Vec<u8>> = golden
        .windows
        .iter()
        .filter(|((_, end), _)| in_second(end))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // The new log holds only what was written after the broker came back.
    let mut features = stage.features();
    features.until(
        DEADLINE,
        "every window after the broker's restart, from the same run",
        |m| m.iter().filter(|m| in_second(&super::window_key(m).1)).count() >= want.len(),
    );
    let recovered = back.elapsed();
    let log = run.log_text();
    assert!(
        log.contains("recreating the producer"),
        "the stuck producer was replaced:\n{}",
        super::tail(&log, 30)
    );
    assert!(
        log.contains("reading it again from its beginning"),
        "the source rewound to the new log:\n{}",
        super::tail(&log, 30)
    );
    assert_eq!(
        log.matches("Kafka unreachable").count(),
        1,
        "the outage is logged once:\n{}",
        super::tail(&log, 30)
    );
    // Still the same process, and it stops cleanly.
    stop_all(vec![run]);
    features.read_to_end();
    let kept: Vec<crate::broker::Msg> = features
        .messages
        .iter()
        .filter(|m| in_second(&super::window_key(m).1))
        .cloned()
        .collect();
    let check = Check::of(&kept, &want);
    report.runs = 1;
    report.faults = 1;
    report.records_in = golden.lines;
    report.recover_ms.push(recovered.as_millis() as u64);
    for (name, value) in [
        ("outage_ms", back.duration_since(went).as_millis() as u64),
        ("ready_503_after_ms", detected.as_millis() as u64),
        ("ready_200_after_ms", ready_again.as_millis() as u64),
        ("stall_timeout_s", stall.as_secs()),
        (
            "windows_lost_with_the_broker",
            (golden.windows.len() - want.len()) as u64,
        ),
    ] {
        report.extra.insert(name.into(), value.into());
    }
    report = report.with(&check);
    report.emit();
    check.assert_clean("after a broker restart, unaided");
}

/// The `worker_step_age_ms` of every progress line in `log` after byte `from`.
fn step_ages(log: &str, from: usize) -> Vec<u64> {
    crate::common::plain(log.get(from..).unwrap_or_default())
        .lines()
        .filter(|l| l.contains("progress"))
        .filter_map(|l| l.split("worker_step_age_ms=").nth(1))
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect()
}

#[test]
#[cfg_attr(
    no_test_broker,
    ignore = "needs a Kafka broker: WEATHERFLOW_TEST_BROKERS=$(scripts/test-broker.sh up)"
)]
fn reliability_broker_paused_workers_keep_stepping_and_ctrl_c_is_prompt() {
    // Scenario 3c, aimed at the worker threads: with the broker paused, no worker may
    // block inside an operator (every progress line shows each worker stepping within the
    // last second), Ctrl-C must end the run within about a second although nothing can be
    // acknowledged, and a restart after the outage must lose nothing.
    if crate::broker::brokers().is_none() {
        return;
    }
    let stage = Stage::new("stepping", 20, "2h");
    let mut report = Report::new("3c. broker paused: workers keep stepping, Ctrl-C honoured");
    let (fed, _) = producer(stage.dir(), &stage.settings, &stage.golden.raw, 0).wait(DEADLINE);
    assert!(fed, "input produced");
    let args = [
        "--idle-timeout",
        "8s",
        "--progress-interval",
        "250ms",
        "--max-ahead",
        "20m",
    ];
    let (run, port) = stage.ready_pipeline("run", &args);
    let mut features = stage.features();
    let progress = Progress::default();
    let total = stage.golden.windows.len();
    await_windows(&mut features, &progress, total / 10, "output before the pause");

    let from = run.log_text().len();
    stage.pause_until_unready(port);
    // Some seconds of outage, observed through the pipeline's own progress lines.
    unready_for(port, Instant::now(), Duration::from_secs(3));
    let ages = step_ages(&run.log_text(), from);
    assert!(
        ages.len() >= 8,
        "progress lines keep coming during the outage: {ages:?}"
    );
    let worst = ages.iter().copied().max().unwrap_or(u64::MAX);
    assert!(
        worst < 1_000,
        "a worker stopped stepping during the outage: ages {ages:?}"
    );

    let log_path = run.log.clone();
    signal(run.id(), "-INT");
    let (_, took) = run.wait(Duration::from_secs(30));
    let log = std::fs::read_to_string(&log_path).expect("pipeline log");
    assert!(
        took < Duration::from_millis(1_500),
        "Ctrl-C during an outage took {took:?}; log tail:\n{}",
        super::tail(&log, 20)
    );

    stage.broker.resume();
    let again = pipeline(stage.dir(), "again", &stage.settings, stage.name, &["-w", "2"]);
    await_windows(&mut features, &progress, total, "every window after the restart");
    stop_all(vec![again]);
    features.read_to_end();
    let check = Check::of(&features.messages, &stage.golden.windows);
    report.runs = 2;
    report.faults = 1;
    report.records_in = stage.golden.lines;
    report
        .extra
        .insert("ctrl_c_exit_ms".into(), (took.as_millis() as u64).into());
    report.extra.insert("max_worker_step_age_ms".into(), worst.into());
    report
        .extra
        .insert("progress_lines_in_outage".into(), ages.len().into());
    report = report.with(&check);
    report.emit();
    check.assert_clean("Ctrl-C during a broker pause, then restart");
}
