//! Scenario 4: poison records of every invalid kind of docs/design.md §3 (and the usual suspects
//! beyond it) mixed into valid traffic. Each lands in the dead-letter topic with its
//! reason and is counted; the valid readings' windows are exactly the golden ones; no
//! `NaN` reaches any output.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use weatherflow::delivery::{DEAD_LETTER_HEAD_BYTES, DEAD_LETTER_MAX_BYTES};
use weatherflow::schema::{format_rfc3339, parse_json};

use crate::broker::{Reader, brokers, create_topic, fresh_topics, produce};
use crate::common::free_port;
use crate::http;

use super::{Check, DEADLINE, Golden, Progress, Report, await_windows, long, pipeline, sample, stop_all};

/// Every poison record with the reason it must be dead-lettered for.
fn poison(now_ms: u64) -> Vec<(&'static str, Vec<u8>)> {
    let ts = r#""timestamp":"2026-11-20T00:10:00Z""#;
    let rec = |body: String| body.into_bytes();
    let with = |fields: &str| rec(format!(r#"{{"station_id":"poison",{ts},{fields}}}"#));
    let mut out = vec![
        ("malformed_json", rec(r#"{"station_id":"poison","timestamp":"#.into())),
        ("malformed_json", rec("weather is nice".into())),
        ("malformed_json", rec("[1,2,3]".into())),
        ("malformed_json", Vec::new()),
        ("malformed_json", vec![0xff, 0xfe, b'{', 0x80, 0x00]),
        (
            "malformed_json",
            [
                &br#"{"station_id":"p"#[..],
                &[0xc3, 0x28],
                br#"","timestamp":0,"temperature":1}"#,
            ]
            .concat(),
        ),
        ("missing_field", rec(format!(r#"{{{ts},"temperature":1}}"#))),
        (
            "missing_field",
            rec(r#"{"station_id":"poison","temperature":1}"#.into()),
        ),
        ("missing_field", with(r#""humidity":50"#)),
        ("missing_field", with(r#""temperature":null"#)),
        ("wrong_type", with(r#""temperature":"12.5""#)),
        ("wrong_type", rec(format!(r#"{{"station_id":5,{ts},"temperature":1}}"#))),
        (
            "wrong_type",
            rec(r#"{"station_id":"poison","timestamp":true,"temperature":1}"#.into()),
        ),
        ("wrong_type", with(r#""temperature":1,"humidity":[50]"#)),
        (
            "bad_timestamp",
            rec(r#"{"station_id":"poison","timestamp":"yesterday","temperature":1}"#.into()),
        ),
        (
            "bad_timestamp",
            rec(r#"{"station_id":"poison","timestamp":-5,"temperature":1}"#.into()),
        ),
        (
            "bad_timestamp",
            rec(r#"{"station_id":"poison","timestamp":"2026-13-40T99:00:00Z","temperature":1}"#.into()),
        ),
        ("non_finite", with(r#""temperature":NaN"#)),
        ("non_finite", with(r#""temperature":Infinity"#)),
        ("non_finite", with(r#""temperature":1,"pressure":-Infinity"#)),
        ("non_finite", with(r#""temperature":1e999"#)),
        ("out_of_range", with(r#""temperature":60.5"#)),
        ("out_of_range", with(r#""temperature":-95"#)),
        ("out_of_range", with(r#""temperature":10,"humidity":100.5"#)),
        ("out_of_range", with(r#""temperature":10,"pressure":250"#)),
        ("out_of_range", with(r#""temperature":10,"wind_speed":-1"#)),
        ("out_of_range", with(r#""temperature":10,"wind_speed":130"#)),
        (
            "empty_station_id",
            rec(format!(r#"{{"station_id":"",{ts},"temperature":1}}"#)),
        ),
        (
            "station_id_too_long",
            rec(format!(r#"{{"station_id":"{}",{ts},"temperature":1}}"#, "s".repeat(65))),
        ),
        (
            "oversized",
            rec(format!(
                r#"{{"station_id":"poison",{ts},"temperature":1,"pad":"{}"}}"#,
                "x".repeat(70_000)
            )),
        ),
        (
            "oversized",
            rec(format!(
                r#"{{"station_id":"poison",{ts},"temperature":1,"pad":"{}"}}"#,
                "y".repeat(2 << 20)
            )),
        ),
    ];
    // More than a day ahead of the wall clock: one such reading would otherwise drag its
    // partition's watermark a day forward and make every honest reading late.
    let future = format_rfc3339(now_ms + 2 * 86_400_000);
    out.push((
        "future_timestamp",
        rec(format!(
            r#"{{"station_id":"poison","timestamp":"{future}","temperature":1}}"#
        )),
    ));
    out
}

#[test]
#[cfg_attr(
    no_test_broker,
    ignore = "needs a Kafka broker: WEATHERFLOW_TEST_BROKERS=$(scripts/test-broker.sh up)"
)]
fn reliability_poison_records_are_dead_lettered_counted_and_harmless() {
    let Some(brokers) = brokers() else { return };
    let dir = super::workdir();
    let (stations, duration, rounds) = if long() { (100, "6h", 20) } else { (12, "1h", 1) };
    let golden = Golden::generate(dir.path(), stations, duration, &[]);
    let mut settings = fresh_topics(&brokers, "poison", 4);
    // Operators raise a topic's limit to let large messages in; the pipeline must then
    // cope with messages larger than its own output topics accept.
    let raw = format!("{}-big", settings.topics.raw);
    create_topic(&brokers, &raw, 4, &[("max.message.bytes", "8388608")]);
    settings.topics.raw = raw;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as u64;
    let poisons = poison(now);

    // Valid readings keep their order per station (partition = station index mod 4); the
    // poison is spread between them over every partition. One valid reading gains nested
    // unknown fields (accepted, the values unchanged), and every generator line already
    // carries the unknown `seq`.
    let text = std::fs::read_to_string(&golden.raw).expect("raw");
    let valid: Vec<&str> = text.lines().collect();
    let mut station_index: BTreeMap<String, i32> = BTreeMap::new();
    let mut records: Vec<(Option<String>, i32, Vec<u8>)> = Vec::new();
    let mut expected: Vec<(&str, Vec<u8>)> = Vec::new();
    let spacing = valid.len() / (poisons.len() * rounds + 1);
    let mut next_poison = poisons.iter().cycle().take(poisons.len() * rounds).enumerate();
    for (i, line) in valid.iter().enumerate() {
        let reading = parse_json(line.as_bytes(), 0).expect("generator lines are valid");
        let n = station_index.len() as i32;
        let partition = *station_index.entry(reading.station.to_string()).or_insert(n) % 4;
        let payload = if i == valid.len() / 2 {
            let body = line.strip_suffix('}').expect("object");
            format!(r#"{body},"meta":{{"firmware":"2.1","flags":[1,2]}},"note":null}}"#).into_bytes()
        } else {
            line.as_bytes().to_vec()
        };
        records.push((Some(reading.station.to_string()), partition, payload));
        if i % spacing == spacing - 1
            && let Some((k, (reason, bad))) = next_poison.next()
        {
            records.push((Some("poison".into()), (k % 4) as i32, bad.clone()));
            expected.push((reason, bad.clone()));
        }
    }
    produce(&brokers, &settings.topics.raw, &records);

    let port = free_port();
    let api = format!("127.0.0.1:{port}");
    let run = pipeline(dir.path(), "run", &settings, "poison", &["-w", "2", "--api", &api]);
    let mut features = Reader::new(&brokers, &settings.topics.features);
    let progress = Progress::default();
    await_windows(&mut features, &progress, golden.windows.len(), "every window");
    let mut dlq = Reader::new(&brokers, &settings.topics.dlq);
    dlq.until(DEADLINE, "every poison record", |m| m.len() >= expected.len());
    let mut predictions = Reader::new(&brokers, &settings.topics.predictions);
    predictions.until(DEADLINE, "a prediction per window", |m| m.len() >= golden.windows.len());
    let metrics = http::get(port, "/metrics").text();
    stop_all(vec![run]);
    features.read_to_end();
    predictions.read_to_end();
    dlq.read_to_end();

    // Dead letters: exactly the poison, byte for byte, each with its reason; one larger
    // than the dead-letter limit keeps its head and names its size.
    let mut got: Vec<(String, Vec<u8>, Option<String>)> = dlq
        .messages
        .iter()
        .map(|m| {
            let reason = m.headers.get("reason").cloned().unwrap_or_default();
            (reason, m.payload.clone(), m.headers.get("original_bytes").cloned())
        })
        .collect();
    let mut want: Vec<(String, Vec<u8>, Option<String>)> = expected
        .iter()
        .map(|(r, b)| match b.len() > DEAD_LETTER_MAX_BYTES {
            true => (
                r.to_string(),
                b[..DEAD_LETTER_HEAD_BYTES].to_vec(),
                Some(b.len().to_string()),
            ),
            false => (r.to_string(), b.clone(), None),
        })
        .collect();
    got.sort();
    want.sort();
    let kinds: Vec<&str> = want.iter().map(|(r, _, _)| r.as_str()).collect();
    assert_eq!(got.len(), want.len(), "one dead letter per poison record");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(
            g.0,
            w.0,
            "reason of {:?}",
            String::from_utf8_lossy(&w.1[..w.1.len().min(80)])
        );
        assert!(
            g.1 == w.1,
            "the dead letter holds the original bytes ({} bytes)",
            w.1.len()
        );
        assert_eq!(g.2, w.2, "original_bytes header");
    }

    // Counted by reason.
    let mut per_reason: BTreeMap<&str, u64> = BTreeMap::new();
    for (reason, _) in &expected {
        *per_reason.entry(reason).or_default() += 1;
    }
    for (reason, n) in &per_reason {
        let series = format!(r#"weatherflow_records_invalid_total{{reason="{reason}"}}"#);
        assert_eq!(sample(&metrics, &series), Some(*n), "{series}");
    }

    // Valid readings unaffected; nothing non-finite anywhere in the output.
    let check = Check::of(&features.messages, &golden.windows);
    for m in features.messages.iter().chain(&predictions.messages) {
        let text = String::from_utf8_lossy(&m.payload);
        assert!(
            !text.contains("NaN") && !text.contains("nfinity"),
            "non-finite output: {text}"
        );
        serde_json::from_slice::<serde_json::Value>(&m.payload).expect("outputs are JSON");
    }
    let mut report = Report::new("4. poison records");
    report.runs = 1;
    report.faults = expected.len();
    report.records_in = records.len();
    report.extra.insert("kinds".into(), per_reason.len().into());
    report.extra.insert(
        "largest_bytes".into(),
        expected.iter().map(|(_, b)| b.len()).max().unwrap_or(0).into(),
    );
    report = report.with(&check);
    report.emit();
    check.assert_clean("poison records");
    assert!(kinds.len() >= 30, "the poison covers every kind");
}
