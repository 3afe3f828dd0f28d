//! Scenario 3: the broker goes away. A private broker (its own port, so the shared one
//! keeps serving the other tests) is paused with SIGSTOP for 30 s mid-stream, then
//! continued. The pipeline must say so once in its log, answer 503 on `/ready` during
//! the outage and 200 after, resume unaided, and lose nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::broker::{Reader, signal};
use crate::common::free_port;
use crate::http;

use super::{Check, DEADLINE, Golden, Progress, Report, await_windows, pipeline, producer, settle, stop_all};

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
        assert!(out.status.success(), "private broker: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn pid(&self) -> u32 {
        std::fs::read_to_string(self.dir.join("broker.pid"))
            .expect("broker pid file")
            .trim()
            .parse()
            .expect("pid")
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

/// Polls `/ready` until its status is `want`; returns how long that took.
fn ready_becomes(port: u16, want: u16, within: Duration) -> Duration {
    let started = Instant::now();
    http::until(port, "/ready", within, |a| a.status == want);
    started.elapsed()
}

#[test]
#[ignore = "long: 30 s broker pause; run by scripts/reliability.sh"]
fn reliability_broker_paused_30s_ready_flips_and_nothing_is_lost() {
    let dir = super::workdir();
    let broker = PrivateBroker::up(dir.path());
    let golden = Golden::generate(dir.path(), 40, "3h", &[]);
    let settings = crate::broker::fresh_topics(&broker.address, "pause", 4);
    let mut report = Report::new("3. broker paused 30 s (SIGSTOP/SIGCONT)");
    let feed = producer(dir.path(), &settings, &golden.raw, 2_000);
    let port = free_port();
    let api = format!("127.0.0.1:{port}");
    // An idle timeout above the watch's detection time (about 5 s), as in production
    // (default 30 s): partitions fall quiet before an outage is known otherwise.
    let run = pipeline(dir.path(), "run", &settings, "pause", &["-w", "2", "--api", &api, "--idle-timeout", "8s"]);
    let mut features = Reader::new(&broker.address, &settings.topics.features);
    let progress = Progress::default();
    let total = golden.windows.len();
    ready_becomes(port, 200, DEADLINE);
    await_windows(&mut features, &progress, total / 4, "output before the pause");

    let pid = broker.pid();
    signal(pid, "-STOP");
    let paused = Instant::now();
    let detected = ready_becomes(port, 503, Duration::from_secs(20));
    // For the rest of the 30 s, /ready must keep saying 503.
    while paused.elapsed() < Duration::from_secs(30) {
        let a = http::get(port, "/ready");
        assert_eq!(a.status, 503, "/ready during the outage: {}", a.text());
        // Each request takes a moment; a short pause between them keeps the loop cheap.
        std::thread::sleep(Duration::from_millis(250));
    }
    signal(pid, "-CONT");
    let resumed = Instant::now();
    let ready_again = ready_becomes(port, 200, Duration::from_secs(60));
    let before = settle(&mut features, &progress);
    await_windows(&mut features, &progress, before + 1, "a new window after the outage");
    report.recover_ms.push(resumed.elapsed().as_millis() as u64);

    let (fed, _) = feed.wait(DEADLINE);
    assert!(fed, "the producer rode out the outage");
    await_windows(&mut features, &progress, total, "every window");
    let log_path = run.log.clone();
    stop_all(vec![run]);
    features.read_to_end();
    let log = std::fs::read_to_string(&log_path).expect("pipeline log");
    let told = log.matches("Kafka unreachable").count();
    let back = log.matches("Kafka reachable again").count();
    let noisy = log.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).count();
    let check = Check::of(&features.messages, &golden.windows);
    report.runs = 1;
    report.faults = 1;
    report.records_in = golden.lines;
    report.extra.insert("ready_503_after_ms".into(), (detected.as_millis() as u64).into());
    report.extra.insert("ready_200_after_ms".into(), (ready_again.as_millis() as u64).into());
    report.extra.insert("warn_or_error_lines".into(), noisy.into());
    report = report.with(&check);
    report.emit();
    assert_eq!((told, back), (1, 1), "the outage is logged once, its end once:\n{log}");
    assert!(noisy <= 10, "{noisy} warning/error lines for one outage:\n{log}");
    check.assert_clean("broker paused");
}
