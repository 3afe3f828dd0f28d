//! The pipeline against a real Kafka-protocol broker, as a child process: end to end
//! against the oracle with dead letters, `kill -9` and restart, a two-process cluster, and
//! the committed-offset contract after a clean stop.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use weatherflow::delivery::checkpoint;
use weatherflow::kafka::KafkaSettings;
use weatherflow::schema::{WindowFeatures, format_rfc3339, parse_json};
use weatherflow::sources::kafka::partition::RETAIN_MS;

use crate::broker::{Msg, Reader, brokers, fold, fresh_topics, pipeline, produce, signal};
use crate::common::{arg, free_port, replay, sorted_lines, spawn, wait};
use crate::oracle::{self, Obs};

const DEADLINE: Duration = Duration::from_secs(120);

/// Stops pipeline processes with SIGTERM and asserts clean exits. All processes of a
/// cluster are signalled before any is waited for: a timely process only finishes once
/// its peers do.
fn stop(children: Vec<Child>) {
    for child in &children {
        signal(child.id(), "-TERM");
    }
    for child in children {
        let output = wait(child, DEADLINE);
        assert!(
            output.status.success(),
            "pipeline did not stop cleanly: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Generator readings as a JSONL file, and the windows a serial replay of it gives,
/// keyed like [`fold`]: (station_id, window_end) → the weather-features line.
fn golden(dir: &Path, stations: &str, duration: &str) -> (std::path::PathBuf, BTreeMap<(String, String), Vec<u8>>) {
    let raw = dir.join("raw.jsonl");
    let args: Vec<String> = [
        "generate",
        "--stations",
        stations,
        "--duration",
        duration,
        "--seed",
        "7",
        "--start",
        "2026-11-20T00:00:00Z",
        "--no-faults",
        "--output",
        &arg(&raw),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    crate::common::run_binary(&args);
    let out = dir.join("golden.jsonl");
    replay(&raw, &out, "1", &[]);
    let golden = sorted_lines(&out)
        .into_iter()
        .map(|line| {
            let w: WindowFeatures = serde_json::from_str(&line).expect("features line");
            ((w.station_id, format_rfc3339(w.window_end)), line.into_bytes())
        })
        .collect();
    (raw, golden)
}

fn produce_file(settings: &KafkaSettings, raw: &Path, rate: &str) -> Child {
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
        rate,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    spawn(&args)
}

fn assert_same(got: &BTreeMap<(String, String), Vec<u8>>, want: &BTreeMap<(String, String), Vec<u8>>) {
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).take(5).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    for (key, line) in want {
        assert_eq!(
            String::from_utf8_lossy(&got[key]),
            String::from_utf8_lossy(line),
            "window {key:?}"
        );
    }
}

fn distinct_windows(messages: &[Msg]) -> usize {
    messages
        .iter()
        .filter_map(|m| Some((m.key.clone()?, m.headers.get("window_end")?.clone())))
        .collect::<BTreeSet<_>>()
        .len()
}

/// A pipeline caught mid-stream: a rate-limited producer still writing, and the first
/// windows already in the features topic.
struct MidStream {
    _dir: tempfile::TempDir,
    want: BTreeMap<(String, String), Vec<u8>>,
    settings: KafkaSettings,
    producer: Child,
    first: Child,
    features: Reader,
}

fn mid_stream(brokers: &str, test: &str) -> MidStream {
    let dir = tempfile::tempdir().expect("temp dir");
    let (raw, want) = golden(dir.path(), "40", "2h");
    let settings = fresh_topics(brokers, test, 4);
    let producer = produce_file(&settings, &raw, "12000");
    let first = pipeline(&settings, test, &["-w", "2"]);
    let mut features = Reader::new(brokers, &settings.topics.features);
    features.until(DEADLINE, "the first windows", |m| m.len() >= 300);
    MidStream {
        _dir: dir,
        want,
        settings,
        producer,
        first,
        features,
    }
}

#[test]
#[cfg_attr(
    no_test_broker,
    ignore = "needs a Kafka broker: WEATHERFLOW_TEST_BROKERS=$(scripts/test-broker.sh up)"
)]
fn kafka_end_to_end_matches_the_oracle_and_dead_letters_poison() {
    let Some(brokers) = brokers() else { return };
    let settings = fresh_topics(&brokers, "e2e", 4);
    let lines = oracle::generate(0x5eed);
    let mut stations: Vec<String> = lines
        .iter()
        .filter_map(|(_, o)| o.as_ref().map(|o| o.station.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    stations.sort();
    let partition_of = |o: &Obs| stations.iter().position(|s| *s == o.station).unwrap_or(0) % 4;
    let mut records: Vec<(Option<String>, i32, Vec<u8>)> = Vec::new();
    let mut poison: Vec<Vec<u8>> = Vec::new();
    for (i, (line, obs)) in lines.iter().enumerate() {
        match obs {
            Some(o) => records.push((
                Some(o.station.clone()),
                partition_of(o) as i32,
                line.clone().into_bytes(),
            )),
            None => {
                records.push((None, (i % 4) as i32, line.clone().into_bytes()));
                poison.push(line.clone().into_bytes());
            }
        }
    }
    // Poison the contract names beyond the generator's: too large, not UTF-8, empty, NaN.
    let oversized = format!(
        r#"{{"station_id":"alpha","timestamp":"2026-11-20T00:10:00Z","temperature":1,"pad":"{}"}}"#,
        "x".repeat(70_000)
    );
    for (p, bad) in [
        oversized.into_bytes(),
        vec![0xff, 0xfe, b'{', 0x80],
        Vec::new(),
        br#"{"station_id":"alpha","timestamp":"2026-11-20T00:10:00Z","temperature":NaN}"#.to_vec(),
    ]
    .into_iter()
    .enumerate()
    {
        records.push((None, p as i32, bad.clone()));
        poison.push(bad);
    }
    produce(&brokers, &settings.topics.raw, &records);
    let want = oracle::oracle_partitioned(&lines, partition_of);

    let child = pipeline(&settings, "e2e", &["-w", "2"]);
    let mut features = Reader::new(&brokers, &settings.topics.features);
    features.until(DEADLINE, "every expected window", |m| {
        distinct_windows(m) >= want.windows.len()
    });
    stop(vec![child]);
    features.read_to_end();
    let folded = fold(&features.messages);
    assert_eq!(
        folded.len(),
        features.messages.len(),
        "no window emitted twice without a restart"
    );
    let got: BTreeMap<(String, u64), WindowFeatures> = folded
        .values()
        .map(|p| {
            let w: WindowFeatures = serde_json::from_slice(p).expect("features");
            ((w.station_id.clone(), w.window_end), w)
        })
        .collect();
    oracle::assert_windows("kafka -w 2", &got, &want);

    // One prediction per window, keyed and headed like the features.
    let mut predictions = Reader::new(&brokers, &settings.topics.predictions);
    predictions.until(DEADLINE, "a prediction per window", |m| m.len() >= folded.len());
    predictions.read_to_end();
    let predicted = fold(&predictions.messages);
    assert_eq!(
        predicted.keys().collect::<Vec<_>>(),
        folded.keys().collect::<Vec<_>>(),
        "predictions cover exactly the windows"
    );
    for payload in predicted.values() {
        let p: weatherflow::schema::Prediction = serde_json::from_slice(payload).expect("weather-predictions JSON");
        assert_eq!(p.forecasts.len(), 3);
    }

    let mut dlq = Reader::new(&brokers, &settings.topics.dlq);
    dlq.until(DEADLINE, "every poison message", |m| m.len() >= poison.len());
    dlq.read_to_end();
    let mut got_poison: Vec<Vec<u8>> = dlq.messages.iter().map(|m| m.payload.clone()).collect();
    let mut want_poison = poison.clone();
    got_poison.sort();
    want_poison.sort();
    assert_eq!(
        got_poison, want_poison,
        "the dead-letter topic holds exactly the poison, byte for byte"
    );
    let raw_offsets: HashMap<(i32, i64), &Vec<u8>> = {
        // Offsets per partition follow the order records were produced in.
        let mut next: HashMap<i32, i64> = HashMap::new();
        records
            .iter()
            .map(|(_, p, payload)| {
                let o = next.entry(*p).or_insert(0);
                *o += 1;
                ((*p, *o - 1), payload)
            })
            .collect()
    };
    for m in &dlq.messages {
        let h = &m.headers;
        let reason = h.get("reason").expect("reason header");
        let want_reason = parse_json(&m.payload, 0)
            .expect_err("poison is invalid")
            .reason
            .as_str();
        assert_eq!(reason, want_reason);
        assert_eq!(h.get("source_topic"), Some(&settings.topics.raw));
        let p: i32 = h["source_partition"].parse().expect("partition header");
        let o: i64 = h["source_offset"].parse().expect("offset header");
        assert_eq!(
            raw_offsets.get(&(p, o)),
            Some(&&m.payload),
            "headers point at the original"
        );
    }
    let oversized_reason = dlq
        .messages
        .iter()
        .find(|m| m.payload.len() > 65_536)
        .map(|m| m.headers["reason"].clone());
    assert_eq!(oversized_reason.as_deref(), Some("oversized"));
}

#[test]
#[cfg_attr(
    no_test_broker,
    ignore = "needs a Kafka broker: WEATHERFLOW_TEST_BROKERS=$(scripts/test-broker.sh up)"
)]
fn kafka_restart_after_kill_9_loses_nothing_and_repeats_identically() {
    let Some(brokers) = brokers() else { return };
    let MidStream {
        _dir,
        want,
        settings,
        producer,
        first,
        mut features,
    } = mid_stream(&brokers, "restart");
    signal(first.id(), "-9");
    let _ = wait(first, DEADLINE);
    let before = features.messages.len();
    let second = pipeline(&settings, "restart", &["-w", "2"]);
    let produced = wait(producer, DEADLINE);
    assert!(
        produced.status.success(),
        "{}",
        String::from_utf8_lossy(&produced.stderr)
    );
    features.until(DEADLINE, "every window", |m| distinct_windows(m) >= want.len());
    stop(vec![second]);
    features.read_to_end();
    assert!(
        before < want.len(),
        "the kill landed mid-stream ({before} of {} windows)",
        want.len()
    );
    assert_same(&fold(&features.messages), &want);
}

#[test]
#[cfg_attr(
    no_test_broker,
    ignore = "needs a Kafka broker: WEATHERFLOW_TEST_BROKERS=$(scripts/test-broker.sh up)"
)]
fn kafka_two_processes_give_the_output_of_one_worker() {
    let Some(brokers) = brokers() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let (raw, want) = golden(dir.path(), "30", "1h");
    let single = fresh_topics(&brokers, "single", 4);
    let cluster = KafkaSettings {
        topics: weatherflow::kafka::Topics {
            raw: single.topics.raw.clone(),
            ..fresh_topics(&brokers, "cluster", 4).topics
        },
        ..single.clone()
    };
    let produced = wait(produce_file(&single, &raw, "0"), DEADLINE);
    assert!(
        produced.status.success(),
        "{}",
        String::from_utf8_lossy(&produced.stderr)
    );

    let one = pipeline(&single, "single", &["-w", "1"]);
    let hostfile = dir.path().join("hosts");
    std::fs::write(
        &hostfile,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port()),
    )
    .expect("hostfile");
    let hosts = arg(&hostfile);
    let procs: Vec<Child> = (0..2)
        .map(|p| {
            let p = p.to_string();
            pipeline(&cluster, "cluster", &["-w", "2", "-n", "2", "-p", &p, "-h", &hosts])
        })
        .collect();
    for (settings, children) in [(&single, vec![one]), (&cluster, procs)] {
        let mut features = Reader::new(&brokers, &settings.topics.features);
        features.until(DEADLINE, "every window", |m| distinct_windows(m) >= want.len());
        stop(children);
        features.read_to_end();
        assert_same(&fold(&features.messages), &want);
    }
}

#[test]
#[cfg_attr(
    no_test_broker,
    ignore = "needs a Kafka broker: WEATHERFLOW_TEST_BROKERS=$(scripts/test-broker.sh up)"
)]
fn kafka_clean_stop_commits_behind_the_durable_frontier() {
    let Some(brokers) = brokers() else { return };
    let MidStream {
        _dir,
        want,
        settings,
        producer,
        first,
        mut features,
    } = mid_stream(&brokers, "commit");
    stop(vec![first]);
    features.read_to_end();
    let first_run = fold(&features.messages);
    let first_count = features.messages.len();

    // The contract: each resume point carries the durable frontier D, every reading before
    // its offset is older than D − 6 min, and every window ending before D is in the topic.
    // The group's committed offsets match the checkpoints.
    let checkpoints = checkpoint::read_latest(&settings, "commit", &settings.topics.raw, Duration::from_secs(10))
        .expect("checkpoints readable");
    assert_eq!(checkpoints.len(), 4, "every partition has a resume point");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "commit")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition(&settings.topics.raw, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    for elem in committed.elements() {
        let (offset, _) = checkpoints[&elem.partition()];
        assert_eq!(
            elem.offset(),
            Offset::Offset(offset),
            "group offset = checkpoint offset"
        );
    }
    let mut raw_reader = Reader::new(&brokers, &settings.topics.raw);
    raw_reader.read_to_end();
    let mut durable = 0;
    for (partition, (offset, resume)) in &checkpoints {
        durable = durable.max(resume.durable_ms);
        for m in raw_reader
            .messages
            .iter()
            .filter(|m| m.partition == *partition && m.offset < *offset)
        {
            let r = parse_json(&m.payload, 0).expect("valid reading");
            assert!(
                r.timestamp_ms - r.timestamp_ms % 60_000 + RETAIN_MS < resume.durable_ms,
                "partition {} offset {} committed past a reading still needed",
                m.partition,
                m.offset
            );
        }
    }
    assert!(durable > 0, "something was committed");
    for ((station, end), line) in &want {
        if weatherflow::schema::parse_rfc3339(end).is_some_and(|e| e < durable) {
            assert_eq!(
                first_run.get(&(station.clone(), end.clone())),
                Some(line),
                "durable window {station} @ {end}"
            );
        }
    }

    // A restart repeats nothing but identical windows, and completes the output.
    let produced = wait(producer, DEADLINE);
    assert!(
        produced.status.success(),
        "{}",
        String::from_utf8_lossy(&produced.stderr)
    );
    let second = pipeline(&settings, "commit", &["-w", "1"]);
    features.until(DEADLINE, "every window", |m| distinct_windows(m) >= want.len());
    stop(vec![second]);
    features.read_to_end();
    let repeated = features.messages[first_count..]
        .iter()
        .filter(|m| {
            let end = m
                .headers
                .get("window_end")
                .and_then(|e| weatherflow::schema::parse_rfc3339(e));
            end.is_some_and(|e| e < durable)
        })
        .count();
    assert_eq!(repeated, 0, "windows before the resume point are not emitted again");
    assert_same(&fold(&features.messages), &want);
}

#[test]
#[cfg_attr(
    no_test_broker,
    ignore = "needs a Kafka broker: WEATHERFLOW_TEST_BROKERS=$(scripts/test-broker.sh up)"
)]
fn a_backfill_in_two_stop_at_end_runs_ends_as_one() {
    // The end of input closes the last windows before the watermark has reached them.
    // The run that ended there must not record "everything is durable": a second run on
    // the same group, after more data arrived, emits those windows again with all their
    // readings and carries on. Before the fix its resume point was u64::MAX and it
    // emitted nothing.
    let Some(brokers) = brokers() else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let (raw, want) = golden(dir.path(), "10", "3h");
    let split = weatherflow::schema::parse_rfc3339("2026-11-20T01:30:00Z").expect("timestamp");
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for line in std::fs::read_to_string(&raw).expect("raw file").lines() {
        let r = parse_json(line.as_bytes(), 0).expect("generated reading");
        let part = if r.timestamp_ms < split {
            &mut first
        } else {
            &mut second
        };
        part.push((Some(r.station.as_str().to_string()), 0, line.as_bytes().to_vec()));
    }
    let settings = fresh_topics(&brokers, "backfill", 1);
    let mut features = Reader::new(&brokers, &settings.topics.features);
    for (part, records) in [first, second].iter().enumerate() {
        produce(&brokers, &settings.topics.raw, records);
        let run = pipeline(&settings, "backfill", &["-w", "2", "--no-ml", "--stop-at-end"]);
        let out = wait(run, DEADLINE);
        assert!(
            out.status.success(),
            "part {part}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    features.read_to_end();
    // The last copy of each window wins; only windows the first end of input closed
    // early may have an earlier, different copy.
    let mut last: BTreeMap<(String, String), Vec<u8>> = BTreeMap::new();
    let mut revised = BTreeSet::new();
    for m in &features.messages {
        let key = crate::reliability::window_key(m);
        if last
            .insert(key.clone(), m.payload.clone())
            .is_some_and(|old| old != m.payload)
        {
            revised.insert(key);
        }
    }
    assert_same(&last, &want);
    let early_close = (split - 10 * 60_000)..=(split + 5 * 60_000);
    for (station, end) in &revised {
        let end_ms = weatherflow::schema::parse_rfc3339(end).expect("window end");
        assert!(
            early_close.contains(&end_ms),
            "{station} @ {end} was revised but lies far from the first run's end"
        );
    }
    assert!(
        !revised.is_empty(),
        "the first run's last windows were closed by the end of input and completed by the second"
    );
}
