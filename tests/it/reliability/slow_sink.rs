//! Scenario 6: a slow output side. The same input (12 h of 40 stations, many times the
//! 30 minutes a source may read ahead of the acknowledged output) is run twice: once as
//! is, once with the output producer throttled (a 100-message local queue, 50 ms linger,
//! about 2 000 records/s). The throttled run must read its input more slowly (backpressure
//! reaches the source), keep its peak memory near the free run's, drop nothing, and
//! catch up to the same output.

use std::time::{Duration, Instant};

use crate::broker::{Reader, brokers, fresh_topics};
use crate::common::free_port;
use crate::http;

use super::{Check, DEADLINE, Golden, Progress, Report, await_windows, pipeline, producer, stop_all};

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn records_in(port: u16) -> u64 {
    http::get(port, "/metrics")
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(r#"weatherflow_records_in_total{source="kafka"} "#))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

struct Outcome {
    took: Duration,
    peak_kib: u64,
    check: Check,
}

fn run_once(dir: &std::path::Path, golden: &Golden, brokers: &str, name: &str) -> Outcome {
    let settings = fresh_topics(brokers, name, 4);
    let (fed, _) = producer(dir, &settings, &golden.raw, 0).wait(DEADLINE);
    assert!(fed, "input produced");
    let port = free_port();
    let api = format!("127.0.0.1:{port}");
    let args = ["-w", "2", "--api", &api];
    let started = Instant::now();
    let run = pipeline(dir, name, &settings, name, &args);
    let mut features = Reader::new(brokers, &settings.topics.features);
    let progress = Progress::default();
    await_windows(&mut features, &progress, golden.windows.len(), "every window");
    let took = started.elapsed();
    let peak_kib = peak_rss_kib(run.id());
    stop_all(vec![run]);
    features.read_to_end();
    let check = Check::of(&features.messages, &golden.windows);
    Outcome { took, peak_kib, check }
}

#[test]
#[ignore = "long: a throttled run of about a minute; run by scripts/reliability.sh"]
fn reliability_slow_sink_backpressures_the_source_and_catches_up() {
    let Some(brokers) = brokers() else { return };
    let dir = super::workdir();
    let golden = Golden::generate(dir.path(), 40, "12h", &[]);
    let free = run_once(dir.path(), &golden, &brokers, "sink-free");
    free.check.assert_clean("unthrottled run");

    // The throttled run, watched at the moment the free run had finished.
    let settings = fresh_topics(&brokers, "sink-slow", 4);
    let (fed, _) = producer(dir.path(), &settings, &golden.raw, 0).wait(DEADLINE);
    assert!(fed, "input produced");
    let port = free_port();
    let api = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let run = pipeline(
        dir.path(),
        "sink-slow",
        &settings,
        "sink-slow",
        &[
            "-w",
            "2",
            "--api",
            &api,
            "--kafka-option",
            "queue.buffering.max.messages=100",
            "--kafka-option",
            "linger.ms=50",
        ],
    );
    let mut features = Reader::new(&brokers, &settings.topics.features);
    let progress = Progress::default();
    http::until(port, "/ready", DEADLINE, |a| a.status == 200);
    // Sample at the moment the free run had finished: a point in time, not an event.
    if let Some(rest) = free.took.checked_sub(started.elapsed()) {
        std::thread::sleep(rest);
    }
    let read_when_free_done = records_in(port);
    await_windows(
        &mut features,
        &progress,
        golden.windows.len(),
        "every window, throttled",
    );
    let took = started.elapsed();
    let peak_kib = peak_rss_kib(run.id());
    stop_all(vec![run]);
    features.read_to_end();
    let check = Check::of(&features.messages, &golden.windows);

    let mut report = Report::new("6. slow sink (100-message producer queue)");
    report.runs = 2;
    report.faults = 1;
    report.records_in = golden.lines;
    report.extra.insert("free_s".into(), free.took.as_secs_f64().into());
    report.extra.insert("throttled_s".into(), took.as_secs_f64().into());
    report
        .extra
        .insert("free_peak_rss_mib".into(), (free.peak_kib / 1024).into());
    report
        .extra
        .insert("throttled_peak_rss_mib".into(), (peak_kib / 1024).into());
    report
        .extra
        .insert("read_at_free_finish".into(), read_when_free_done.into());
    report = report.with(&check);
    report.emit();
    check.assert_clean("throttled run");
    assert!(
        took > free.took * 2,
        "the throttle bit: {took:?} against {:?}",
        free.took
    );
    assert!(
        (read_when_free_done as usize) < golden.lines,
        "backpressure reached the source: {read_when_free_done} of {} read when the free run was done",
        golden.lines
    );
    assert!(
        peak_kib <= free.peak_kib + 64 * 1024,
        "memory stayed bounded: {} MiB throttled against {} MiB free",
        peak_kib / 1024,
        free.peak_kib / 1024
    );
}
