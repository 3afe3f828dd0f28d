//! What `run` brings back after a restart, against a real broker: station states it cannot
//! read, and the API's store. (ML state restores after crashes and clean stops are
//! reliability scenarios 1 and 2.)

use std::time::Duration;

use crate::broker::{Reader, fresh_topics, pipeline, produce};
use crate::common::{arg, free_port, plain, run_binary, sorted_lines, wait};
use crate::http::{get, until};
use crate::reliability::{Check, Golden};

/// Produces every line of `path` to partition 0 of `topic`.
fn produce_lines(brokers: &str, topic: &str, path: &std::path::Path) {
    let records: Vec<(Option<String>, i32, Vec<u8>)> = std::fs::read_to_string(path)
        .expect("raw input")
        .lines()
        .map(|l| (None, 0, l.as_bytes().to_vec()))
        .collect();
    produce(brokers, topic, &records);
}

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
    produce_lines(&brokers, &settings.topics.raw, &golden.raw);
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
    produce_lines(&brokers, &settings.topics.raw, &golden.raw);
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

/// 2026-11-20T12:00:00Z.
const T0: u64 = 1_795_176_000_000;

/// A file of `n` readings from `n` distinct ids, all within 20 s of event time from T0.
fn hostile_ids(path: &std::path::Path, n: u64) {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("hostile file"));
    for i in 0..n {
        writeln!(
            out,
            r#"{{"station_id":"x-{i:07}","timestamp":{},"temperature":10.5}}"#,
            T0 + i * 20_000 / n
        )
        .expect("written");
    }
    out.flush().expect("flushed");
}

#[test]
fn a_million_one_off_ids_are_refused_within_the_memory_bound_and_real_stations_are_exact() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hostile = dir.path().join("hostile.jsonl");
    hostile_ids(&hostile, 1_000_000);
    // An hour later, 1,000 real stations every minute for an hour, then every 30 minutes
    // for 26 h: long enough for the one-off ids to pass the default TTL.
    let generate = |name: &str, duration: &str, interval: &str, start: &str| {
        let path = dir.path().join(name);
        let args: Vec<String> = [
            "generate",
            "--stations",
            "1000",
            "--duration",
            duration,
            "--interval",
            interval,
            "--start",
            start,
            "--seed",
            "5",
            "--no-faults",
            "--output",
            &arg(&path),
        ]
        .map(String::from)
        .to_vec();
        run_binary(&args);
        path
    };
    let minutes = generate("real-1.jsonl", "1h", "1m", "2026-11-20T13:00:00Z");
    let sparse = generate("real-2.jsonl", "26h", "30m", "2026-11-20T14:00:00Z");
    let out = dir.path().join("out.jsonl");
    let report = dir.path().join("report.json");
    let inputs = format!("{},{},{}", arg(&hostile), arg(&minutes), arg(&sparse));
    let args: Vec<String> = [
        "run",
        "-w",
        "2",
        "--source",
        "file",
        "--input",
        &inputs,
        "--output",
        &arg(&out),
        "--api",
        "127.0.0.1:0",
        "--bench-report",
        &arg(&report),
    ]
    .map(String::from)
    .to_vec();
    let output = run_binary(&args);
    let summary = plain(&format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ));
    let field = |name: &str| -> u64 {
        summary
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in the summary:\n{summary}"))
    };
    // The default cap (50,000, each of the two workers holding its share plus the slack
    // for the hash spread) fills up; the rest of the burst is refused, counted.
    let held = 2 * weatherflow::dataflow::StationLimits::new(50_000, 2, u64::MAX).per_worker as u64;
    assert_eq!(field("station_limit"), 1_000_000 - held, "{summary}");
    // The TTL passed for the one-off ids; only the real stations are held at the end.
    assert_eq!(field("stations held"), 1_000, "{summary}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("bench report")).expect("report JSON");
    let peak = report["peak_rss_bytes"].as_u64().expect("peak RSS measured");
    eprintln!("hostile ids: peak RSS {:.2} GB", peak as f64 / 1e9);
    assert!(peak < 2_000_000_000, "peak RSS {peak} bytes");
    // The real stations' windows are exactly what they are without the burst.
    let real = dir.path().join("real.jsonl");
    let golden = dir.path().join("golden.jsonl");
    std::fs::write(
        &real,
        [
            std::fs::read(&minutes).expect("read"),
            std::fs::read(&sparse).expect("read"),
        ]
        .concat(),
    )
    .expect("real input");
    crate::common::replay(&real, &golden, "1", &["--no-ml"]);
    let got: Vec<String> = sorted_lines(&out)
        .into_iter()
        .filter(|l| l.starts_with(r#"{"station_id":"st-"#))
        .collect();
    let want = sorted_lines(&golden);
    assert_eq!(got.len(), want.len());
    assert!(
        got == want,
        "the real stations' windows differ from the run without the burst"
    );
}

#[test]
#[cfg_attr(
    no_test_broker,
    ignore = "needs a Kafka broker: WEATHERFLOW_TEST_BROKERS=$(scripts/test-broker.sh up)"
)]
fn readings_beyond_the_station_limit_are_dead_lettered_from_kafka() {
    let Some(brokers) = crate::broker::brokers() else {
        return;
    };
    let settings = fresh_topics(&brokers, "station-limit", 1);
    // Five stations, three minutes each; room for two.
    let mut records = Vec::new();
    for minute in 0..3u64 {
        for s in 0..5 {
            let line = format!(
                r#"{{"station_id":"s{s}","timestamp":{},"temperature":{}}}"#,
                T0 + minute * 60_000 + 5_000,
                10 + s
            );
            records.push((None, 0, line.into_bytes()));
        }
    }
    produce(&brokers, &settings.topics.raw, &records);
    let child = pipeline(
        &settings,
        "station-limit",
        &["-w", "1", "--no-ml", "--stop-at-end", "--max-stations", "2"],
    );
    let out = wait(child, Duration::from_secs(120));
    assert!(out.status.success(), "{}", plain(&String::from_utf8_lossy(&out.stderr)));
    let mut dlq = Reader::new(&brokers, &settings.topics.dlq);
    dlq.until(Duration::from_secs(60), "a dead letter per refused reading", |m| {
        m.len() >= 9
    });
    dlq.read_to_end();
    assert_eq!(dlq.messages.len(), 9, "three stations' three readings");
    let mut refused = std::collections::BTreeSet::new();
    for m in &dlq.messages {
        assert_eq!(m.headers.get("reason").map(String::as_str), Some("station_limit"));
        let reading = weatherflow::schema::parse_json(&m.payload, 0).expect("a weather-raw object");
        refused.insert(reading.station.to_string());
    }
    let mut features = Reader::new(&brokers, &settings.topics.features);
    features.read_to_end();
    let admitted: std::collections::BTreeSet<String> = features
        .messages
        .iter()
        .map(|m| String::from_utf8_lossy(m.key.as_deref().unwrap_or_default()).into_owned())
        .collect();
    assert_eq!((admitted.len(), refused.len()), (2, 3));
    assert!(admitted.is_disjoint(&refused));
}
