//! Scenario 1: `kill -9` at random moments while a producer keeps writing, and `kill -9`
//! of one process of a two-process cluster.
//!
//! Scenario 1 runs with the ML stage and checks the predictions too: the stream is 30 h
//! of one reading a minute, so stations have a full day of history when the later kills
//! come, and every prediction must equal the uninterrupted replay's, byte for byte.

use std::time::{Duration, Instant};

use crate::broker::{Reader, brokers, fresh_topics};
use crate::common::free_port;

use super::{
    Check, DEADLINE, Dice, Golden, Progress, Report, await_windows, long, pipeline, producer, seq_gaps, settle,
    stop_all,
};

#[test]
#[cfg_attr(
    no_test_broker,
    ignore = "needs a Kafka broker: WEATHERFLOW_TEST_BROKERS=$(scripts/test-broker.sh up)"
)]
fn reliability_kill_9_repeatedly_while_producing_loses_nothing() {
    let Some(brokers) = brokers() else { return };
    let dir = super::workdir();
    let (stations, rate, kills) = if long() { (200, 6_000, 20) } else { (40, 3_000, 5) };
    let golden = Golden::generate(dir.path(), stations, "30h", &["--interval", "1m"]);
    let settings = fresh_topics(&brokers, "crash", 4);
    let mut report = Report::new("1. kill -9 while producing");
    let feed = producer(dir.path(), &settings, &golden.raw, rate);
    let mut features = Reader::new(&brokers, &settings.topics.features);
    let mut predictions = Reader::new(&brokers, &settings.topics.predictions);
    let progress = Progress::default();
    let mut dice = Dice::new(0x6b11);
    let total = golden.windows.len();
    let mut run = pipeline(dir.path(), "run-0", &settings, "crash", &["-w", "2"]);
    report.runs = 1;
    for k in 0..kills {
        let target = dice.next_fault(progress.distinct(&features.messages), total, kills - k);
        await_windows(&mut features, &progress, target, "output before a kill");
        run.kill9();
        let killed = Instant::now();
        report.faults += 1;
        let before = settle(&mut features, &progress);
        run = pipeline(dir.path(), &format!("run-{}", k + 1), &settings, "crash", &["-w", "2"]);
        report.runs += 1;
        await_windows(&mut features, &progress, before + 1, "a new window after the restart");
        report.recover_ms.push(killed.elapsed().as_millis() as u64);
    }
    let (fed, _) = feed.wait(DEADLINE);
    assert!(fed, "the producer finished");
    await_windows(&mut features, &progress, total, "every window");
    stop_all(vec![run]);
    features.read_to_end();
    let mut raw = Reader::new(&brokers, &settings.topics.raw);
    raw.read_to_end();
    let (records, station_count, gaps) = seq_gaps(&raw.messages);
    assert_eq!(
        (records, station_count, gaps),
        (golden.lines, stations as usize, 0),
        "the raw topic is complete"
    );
    let check = Check::of(&features.messages, &golden.windows);
    predictions.read_to_end();
    let predicted = Check::of(&predictions.messages, &golden.predictions);
    let short_after_a_day = short_history_after_a_day(&predictions.messages);
    report.records_in = records;
    report.extra.insert("seq_gaps".into(), gaps.into());
    report
        .extra
        .insert("short_history_after_a_day".into(), short_after_a_day.into());
    report = report.with(&check).with_predictions(&predicted);
    report.emit();
    check.assert_clean("kill -9 while producing");
    predicted.assert_clean("kill -9 while producing: predictions against the uninterrupted run");
    assert_eq!(
        short_after_a_day, 0,
        "a restarted station forecast from a short history"
    );
}

/// Predictions made with the short-history model for a station that had a full day of
/// windows before them: the sign of a restart that forgot the station's history.
fn short_history_after_a_day(messages: &[crate::broker::Msg]) -> usize {
    let mut first: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let mut parsed: Vec<weatherflow::schema::Prediction> = messages
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).expect("prediction JSON"))
        .collect();
    parsed.sort_by_key(|p| p.window_end);
    parsed
        .iter()
        .filter(|p| {
            let start = *first.entry(p.station_id.clone()).or_insert(p.window_end);
            // 25 h: the day of history plus the first hour, which the first window opens.
            p.window_end >= start + 25 * 3_600_000 && p.forecast_variant == "short_history"
        })
        .count()
}

#[test]
#[cfg_attr(
    no_test_broker,
    ignore = "needs a Kafka broker: WEATHERFLOW_TEST_BROKERS=$(scripts/test-broker.sh up)"
)]
fn reliability_kill_9_of_one_cluster_process_then_restart() {
    let Some(brokers) = brokers() else { return };
    let dir = super::workdir();
    let (stations, duration, rate) = if long() { (100, "6h", 4_000) } else { (30, "2h", 2_500) };
    let golden = Golden::generate(dir.path(), stations, duration, &[]);
    let settings = fresh_topics(&brokers, "cluster-kill", 4);
    let mut report = Report::new("1b. kill -9 one process of a 2-process cluster");
    let feed = producer(dir.path(), &settings, &golden.raw, rate);
    let mut features = Reader::new(&brokers, &settings.topics.features);
    let progress = Progress::default();
    let cluster = |round: usize| {
        let hostfile = dir.path().join(format!("hosts-{round}"));
        std::fs::write(
            &hostfile,
            format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port()),
        )
        .expect("hostfile");
        let hosts = hostfile.to_string_lossy().into_owned();
        (0..2)
            .map(|p| {
                let p = p.to_string();
                pipeline(
                    dir.path(),
                    &format!("cluster-{round}-{p}"),
                    &settings,
                    "cluster-kill",
                    &["-w", "2", "-n", "2", "-p", &p, "-h", &hosts],
                )
            })
            .collect::<Vec<_>>()
    };
    let mut procs = cluster(0);
    report.runs = 2;
    let total = golden.windows.len();
    await_windows(&mut features, &progress, total / 3, "output before the kill");
    let survivor = procs.remove(0);
    procs.remove(0).kill9();
    report.faults += 1;
    // The survivor cannot continue without its peer (timely has no rejoin): it must notice
    // and exit on its own, non-zero, rather than hang.
    let killed = Instant::now();
    let (ok, noticed) = survivor.wait(Duration::from_secs(60));
    assert!(!ok, "the surviving process reports the failure with a non-zero exit");
    report
        .extra
        .insert("survivor_exit_ms".into(), (noticed.as_millis() as u64).into());
    let before = settle(&mut features, &progress);
    let procs = cluster(1);
    report.runs += 2;
    await_windows(&mut features, &progress, before + 1, "a new window after the restart");
    report.recover_ms.push(killed.elapsed().as_millis() as u64);
    let (fed, _) = feed.wait(DEADLINE);
    assert!(fed, "the producer finished");
    await_windows(&mut features, &progress, total, "every window");
    stop_all(procs);
    features.read_to_end();
    let check = Check::of(&features.messages, &golden.windows);
    report.records_in = golden.lines;
    report = report.with(&check);
    report.emit();
    check.assert_clean("kill -9 of one cluster process");
}
