//! Scenarios 2 and 7: clean stops. A SIGTERM stops reading, drains the sinks, commits and
//! exits 0 in bounded time; the next run, with a different worker count, completes the
//! output with nothing but identical repeats.
//!
//! Scenario 2 restarts a one-worker run as a two-process cluster, with the ML stage: the
//! station states checkpointed by one worker are taken up by whichever of four workers
//! owns each station now, and every prediction equals the uninterrupted run's.

use std::time::{Duration, Instant};

use weatherflow::delivery::checkpoint;

use crate::broker::{Reader, brokers, fresh_topics};
use crate::common::free_port;

use super::{
    Check, DEADLINE, Dice, Golden, Progress, Report, await_windows, long, pipeline, producer, settle, stop_all,
};

/// A clean stop must finish well within this (drain, flush, final commit).
const STOP_BOUND: Duration = Duration::from_secs(20);

#[test]
#[cfg_attr(
    no_test_broker,
    ignore = "needs a Kafka broker: WEATHERFLOW_TEST_BROKERS=$(scripts/test-broker.sh up)"
)]
fn reliability_clean_stop_then_other_worker_count_matches_an_uninterrupted_run() {
    let Some(brokers) = brokers() else { return };
    let dir = super::workdir();
    let stations = if long() { 300 } else { 40 };
    // A day and a bit of one reading a minute: stations have a full day of history when
    // the stop comes, so a forgotten state would show as short-history forecasts.
    let golden = Golden::generate(dir.path(), stations, "30h", &["--interval", "1m"]);
    let settings = fresh_topics(&brokers, "w1w2", 4);
    let mut report = Report::new("2. clean stop -w 1, restart -n 2 -w 2");
    let (fed, _) = producer(dir.path(), &settings, &golden.raw, 0).wait(DEADLINE);
    assert!(fed, "input produced");
    let mut features = Reader::new(&brokers, &settings.topics.features);
    let mut predictions = Reader::new(&brokers, &settings.topics.predictions);
    let progress = Progress::default();
    let total = golden.windows.len();
    let first = pipeline(dir.path(), "w1", &settings, "w1w2", &["-w", "1"]);
    // Past the first day, so the stop comes when stations have a full history.
    await_windows(&mut features, &progress, total * 5 / 6, "part of the output");
    let took = stop_all(vec![first]);
    report.faults = 1;
    report
        .extra
        .insert("stop_ms".into(), (took[0].as_millis() as u64).into());
    assert!(took[0] < STOP_BOUND, "a clean stop took {:?}", took[0]);
    let before = settle(&mut features, &progress);
    let restarted = Instant::now();
    let hostfile = dir.path().join("hosts");
    std::fs::write(
        &hostfile,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port()),
    )
    .expect("hostfile");
    let hosts = hostfile.to_string_lossy().into_owned();
    let cluster: Vec<_> = (0..2)
        .map(|p| {
            let p = p.to_string();
            let name = format!("n2-{p}");
            pipeline(
                dir.path(),
                &name,
                &settings,
                "w1w2",
                &["-w", "2", "-n", "2", "-p", &p, "-h", &hosts],
            )
        })
        .collect();
    await_windows(&mut features, &progress, before + 1, "a new window after the restart");
    report.recover_ms.push(restarted.elapsed().as_millis() as u64);
    await_windows(&mut features, &progress, total, "every window");
    stop_all(cluster);
    report.runs = 3;
    features.read_to_end();
    predictions.read_to_end();
    let check = Check::of(&features.messages, &golden.windows);
    let predicted = Check::of(&predictions.messages, &golden.predictions);
    report.records_in = golden.lines;
    report = report.with(&check).with_predictions(&predicted);
    report.emit();
    check.assert_clean("clean stop -w 1 then -n 2 -w 2");
    predicted.assert_clean("clean stop -w 1 then -n 2 -w 2: predictions against the uninterrupted run");
    assert_eq!(
        (check.identical_repeats, predicted.identical_repeats),
        (0, 0),
        "a clean stop drains before its final checkpoint, so nothing is emitted twice"
    );
}

#[test]
#[cfg_attr(
    no_test_broker,
    ignore = "needs a Kafka broker: WEATHERFLOW_TEST_BROKERS=$(scripts/test-broker.sh up)"
)]
fn reliability_sigterm_mid_window_exits_promptly_and_commits() {
    let Some(brokers) = brokers() else { return };
    let dir = super::workdir();
    let (stations, duration, rate, stops) = if long() {
        (200, "8h", 5_000, 12)
    } else {
        (40, "3h", 3_000, 3)
    };
    let golden = Golden::generate(dir.path(), stations, duration, &[]);
    let settings = fresh_topics(&brokers, "sigterm", 4);
    let mut report = Report::new("7. SIGTERM mid-window while producing");
    let feed = producer(dir.path(), &settings, &golden.raw, rate);
    let mut features = Reader::new(&brokers, &settings.topics.features);
    let progress = Progress::default();
    let mut dice = Dice::new(0x7e57);
    let total = golden.windows.len();
    let workers = |k: usize| if k.is_multiple_of(2) { "1" } else { "2" };
    let mut run = pipeline(dir.path(), "run-0", &settings, "sigterm", &["-w", workers(0)]);
    report.runs = 1;
    let mut stop_ms = Vec::new();
    let mut last_durable = 0;
    for k in 0..stops {
        let target = dice.next_fault(progress.distinct(&features.messages), total, stops - k);
        await_windows(&mut features, &progress, target, "output before a stop");
        let took = stop_all(vec![run]);
        report.faults += 1;
        stop_ms.push(took[0].as_millis() as u64);
        assert!(took[0] < STOP_BOUND, "a clean stop took {:?}", took[0]);
        // The stop committed a resume point at least as far as the last one.
        let resume = checkpoint::read_latest(&settings, "sigterm", &settings.topics.raw, Duration::from_secs(10))
            .expect("checkpoints readable");
        let durable = resume.values().map(|(_, r)| r.durable_ms).max().unwrap_or(0);
        assert!(
            durable > 0 && durable >= last_durable,
            "stop {k} committed (durable {durable})"
        );
        last_durable = durable;
        let before = settle(&mut features, &progress);
        let restarted = Instant::now();
        run = pipeline(
            dir.path(),
            &format!("run-{}", k + 1),
            &settings,
            "sigterm",
            &["-w", workers(k + 1)],
        );
        report.runs += 1;
        await_windows(&mut features, &progress, before + 1, "a new window after the restart");
        report.recover_ms.push(restarted.elapsed().as_millis() as u64);
    }
    let (fed, _) = feed.wait(DEADLINE);
    assert!(fed, "the producer finished");
    await_windows(&mut features, &progress, total, "every window");
    stop_all(vec![run]);
    features.read_to_end();
    let check = Check::of(&features.messages, &golden.windows);
    report.records_in = golden.lines;
    report.extra.insert("stop_ms".into(), stop_ms.into());
    report = report.with(&check);
    report.emit();
    check.assert_clean("SIGTERM mid-window");
}
