//! What `run` brings back after a restart, against a real broker: station states it cannot
//! read, and the API's store. (ML state restores after crashes and clean stops are
//! reliability scenarios 1 and 2.)

use std::time::Duration;

use crate::broker::{Reader, fresh_topics, pipeline, produce};
use crate::common::{free_port, plain, wait};
use crate::http::{get, until};
use crate::reliability::{Check, Golden};

#[test]
#[cfg_attr(
    no_test_broker,
    ignore = "needs a Kafka broker: WEATHERFLOW_TEST_BROKERS=$(scripts/test-broker.sh up)"
)]
fn unreadable_state_records_are_logged_once_and_those_stations_start_fresh() {
    let Some(brokers) = crate::broker::brokers() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let golden = Golden::generate(dir.path(), 5, "3h", &["--interval", "1m"]);
    let settings = fresh_topics(&brokers, "state-garbage", 2);
    let raw: Vec<(Option<String>, i32, Vec<u8>)> = std::fs::read_to_string(&golden.raw)
        .expect("raw input")
        .lines()
        .map(|l| (None, 0, l.as_bytes().to_vec()))
        .collect();
    produce(&brokers, &settings.topics.raw, &raw);
    // Garbage, a record of a future layout, and a record without a key: as another program
    // (or a torn write, or a newer weatherflow) might leave them.
    let mut newer = b"WFS".to_vec();
    newer.push(weatherflow::ml::snapshot::STATE_VERSION + 1);
    newer.extend_from_slice(&[0u8; 64]);
    let state = vec![
        (Some("st-00001".to_string()), 0, b"{\"not\": \"a state\"}".to_vec()),
        (Some("st-00002".to_string()), 0, newer),
        (None, 0, b"no key at all".to_vec()),
    ];
    produce(&brokers, &settings.topics.state, &state);
    let child = pipeline(&settings, "state-garbage", &["-w", "2", "--stop-at-end"]);
    let out = wait(child, Duration::from_secs(120));
    let log = plain(&String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "the run completes:\n{log}");
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("cannot read were discarded"))
        .collect();
    assert_eq!(warnings.len(), 1, "one line names what was discarded:\n{log}");
    for field in ["discarded=2", "other_version=1", "unreadable=1", "without_key=1"] {
        assert!(warnings[0].contains(field), "{field} in {}", warnings[0]);
    }
    // Those stations (and all others: nothing else was restored) start from the prior,
    // exactly as an uninterrupted first run does.
    let mut predictions = Reader::new(&brokers, &settings.topics.predictions);
    predictions.read_to_end();
    let check = Check::of(&predictions.messages, &golden.predictions);
    check.assert_clean("predictions after unreadable state records");
    assert_eq!(check.distinct, golden.predictions.len());
}

#[test]
#[cfg_attr(
    no_test_broker,
    ignore = "needs a Kafka broker: WEATHERFLOW_TEST_BROKERS=$(scripts/test-broker.sh up)"
)]
fn after_a_crash_the_store_comes_back_from_the_topics_before_ready() {
    let Some(brokers) = crate::broker::brokers() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let golden = Golden::generate(dir.path(), 4, "3h", &["--interval", "1m"]);
    let settings = fresh_topics(&brokers, "store-rebuild", 2);
    let raw: Vec<(Option<String>, i32, Vec<u8>)> = std::fs::read_to_string(&golden.raw)
        .expect("raw input")
        .lines()
        .map(|l| (None, 0, l.as_bytes().to_vec()))
        .collect();
    produce(&brokers, &settings.topics.raw, &raw);
    let paths = [
        "/features/st-00001/history?limit=10000",
        "/predictions/st-00002/history?limit=10000",
        "/stations",
    ];
    let answers = |port: u16| -> Vec<serde_json::Value> { paths.iter().map(|p| get(port, p).json()).collect() };
    // The first run reads everything, makes it durable, and lingers: then it is killed.
    let port = free_port();
    let api = format!("127.0.0.1:{port}");
    let mut first = pipeline(
        &settings,
        "store-rebuild",
        &["-w", "2", "--stop-at-end", "--linger", "--api", &api],
    );
    until(port, "/ready", Duration::from_secs(120), |a| {
        a.status == 200 && a.json()["input_complete"] == true
    });
    let before = answers(port);
    assert_eq!(
        before[0]["count"],
        golden.windows.keys().filter(|(s, _)| s == "st-00001").count()
    );
    assert_eq!(
        before[1]["count"],
        golden.predictions.keys().filter(|(s, _)| s == "st-00002").count()
    );
    first.kill().expect("kill -9");
    first.wait().expect("reaped");
    // The second run has nothing left to read: everything it serves comes from the topics.
    let port = free_port();
    let api = format!("127.0.0.1:{port}");
    let mut second = pipeline(
        &settings,
        "store-rebuild",
        &["-w", "1", "--stop-at-end", "--linger", "--api", &api],
    );
    until(port, "/ready", Duration::from_secs(120), |a| a.status == 200);
    let after = answers(port);
    second.kill().expect("kill");
    second.wait().expect("reaped");
    assert_eq!(after, before, "the rebuilt store answers as before the crash");
}
