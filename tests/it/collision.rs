//! Station key collisions, end to end, with a real pair of colliding ids.
//!
//! `0525825d638e3127` and `e9ba4b969a5a42fd` share the 64-bit station key
//! `770dac473b54f193` (FNV-1a with the SplitMix64 finisher). The pair was constructed with
//! Brent's cycle finding over the key function, which is how an attacker with write access
//! to `weather-raw` would do it, so the pipeline must take it in stride: the first id keeps
//! the key, the other's readings are rejected as `station_key_collision`, and the run
//! goes on.

use std::time::Duration;

use weatherflow::dataflow::pane::StationKey;
use weatherflow::schema::InvalidReason;

use crate::broker::{Reader, fresh_topics, pipeline, produce};
use crate::common::{read_features, replay, wait};

const OWNER: &str = "0525825d638e3127";
const INTRUDER: &str = "e9ba4b969a5a42fd";
/// 2026-11-20T12:00:00Z.
const T0: u64 = 1_763_640_000_000;

/// Ten minutes of one reading a minute from each id; the owner comes first.
fn lines() -> Vec<String> {
    let mut out = Vec::new();
    for i in 0..10u64 {
        for (id, temperature) in [(OWNER, 10.0), (INTRUDER, 30.0)] {
            out.push(format!(
                r#"{{"station_id":"{id}","timestamp":{},"temperature":{temperature}}}"#,
                T0 + i * 60_000 + 30_000
            ));
        }
    }
    out
}

#[test]
fn the_constructed_ids_really_collide() {
    assert_eq!(StationKey::of(OWNER), StationKey::of(INTRUDER));
    assert_eq!(StationKey::of(OWNER).0, 0x770d_ac47_3b54_f193);
}

#[test]
fn a_collision_in_a_replay_is_rejected_counted_and_the_run_completes() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("raw.jsonl");
    std::fs::write(&input, lines().join("\n") + "\n").unwrap();
    let output = dir.path().join("features.jsonl");
    let summary = replay(&input, &output, "2", &["--no-ml"]);
    let collided = summary
        .totals
        .invalid
        .iter()
        .find(|(r, _)| *r == InvalidReason::StationKeyCollision)
        .map(|(_, n)| *n);
    assert_eq!(collided, Some(10), "every intruder reading is counted");
    let windows = read_features(&output);
    assert!(!windows.is_empty());
    assert!(
        windows.iter().all(|w| w.station_id == OWNER),
        "only the owner has windows"
    );
    assert!(
        windows
            .iter()
            .all(|w| w.temperature.as_ref().is_some_and(|t| t.max == 10.0)),
        "no intruder value leaked into the owner's windows"
    );
}

#[test]
#[cfg_attr(
    no_test_broker,
    ignore = "needs a Kafka broker: WEATHERFLOW_TEST_BROKERS=$(scripts/test-broker.sh up)"
)]
fn a_collision_from_kafka_is_dead_lettered_with_its_reason() {
    let Some(brokers) = crate::broker::brokers() else {
        return;
    };
    let settings = fresh_topics(&brokers, "collision", 1);
    let records: Vec<(Option<String>, i32, Vec<u8>)> = lines().into_iter().map(|l| (None, 0, l.into_bytes())).collect();
    produce(&brokers, &settings.topics.raw, &records);
    let child = pipeline(&settings, "collision", &["-w", "2", "--no-ml", "--stop-at-end"]);
    let out = wait(child, Duration::from_secs(120));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut dlq = Reader::new(&brokers, &settings.topics.dlq);
    dlq.until(Duration::from_secs(60), "a dead letter per intruder reading", |m| {
        m.len() >= 10
    });
    dlq.read_to_end();
    assert_eq!(dlq.messages.len(), 10);
    for m in &dlq.messages {
        assert_eq!(
            m.headers.get("reason").map(String::as_str),
            Some("station_key_collision")
        );
        assert_eq!(m.headers.get("key_owner").map(String::as_str), Some(OWNER));
        let reading = weatherflow::schema::parse_json(&m.payload, 0).expect("a weather-raw object");
        assert_eq!(reading.station.as_str(), INTRUDER);
    }
    let mut features = Reader::new(&brokers, &settings.topics.features);
    features.read_to_end();
    assert!(!features.messages.is_empty());
    assert!(
        features
            .messages
            .iter()
            .all(|m| m.key.as_deref() == Some(OWNER.as_bytes()))
    );
}
