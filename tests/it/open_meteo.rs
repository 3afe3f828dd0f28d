//! The Open-Meteo client and its politeness against a local server replaying faithful
//! fixtures (`tests/fixtures/open_meteo/`): every answer the API can give, with time
//! passed in, never slept.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weatherflow::produce::open_meteo::{Client, Fetch, Poller};
use weatherflow::schema::parse_json;
use weatherflow::stations::{Station, load};

/// One scripted answer.
#[derive(Clone)]
enum Answer {
    /// Status and the named fixture file as the body.
    Fixture(u16, &'static str),
    /// Status and a literal body.
    Body(u16, &'static str),
    /// Read the request and never answer (the client must time out).
    Silence,
}

/// A one-thread HTTP/1.1 server that answers each connection with the next scripted
/// answer and records the request lines.
struct FixtureServer {
    base: String,
    requests: Arc<Mutex<Vec<String>>>,
}

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/open_meteo")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        429 => "Too Many Requests",
        _ => "Internal Server Error",
    }
}

impl FixtureServer {
    fn start(script: Vec<Answer>) -> FixtureServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            for (answer, stream) in script.into_iter().zip(listener.incoming()) {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                let _ = reader.read_line(&mut line);
                log.lock().unwrap().push(line.trim_end().to_owned());
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                        break;
                    }
                }
                let (code, body) = match answer {
                    Answer::Fixture(code, name) => (code, fixture(name)),
                    Answer::Body(code, body) => (code, body.as_bytes().to_vec()),
                    Answer::Silence => {
                        held.push(stream); // keep it open; the client gives up
                        continue;
                    }
                };
                let head = format!(
                    "HTTP/1.1 {code} {}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    reason(code),
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        FixtureServer { base, requests }
    }
}

/// The catalogue stations `three.json` answers, in its order.
fn three_stations() -> Vec<Station> {
    let all = load(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("stations.toml")).expect("catalogue");
    ["berlin-tegel", "sydney", "fairbanks"]
        .iter()
        .map(|id| all.iter().find(|s| s.id == *id).expect("station in catalogue").clone())
        .collect()
}

/// 2025-07-14T12:50:00Z, five minutes after the fixtures' `current.time`.
const NOW: u64 = 1_752_497_400_000;
const MINUTE: u64 = 60_000;

#[test]
fn every_upstream_answer_is_handled_politely() {
    use Answer::*;
    let server = FixtureServer::start(vec![
        Fixture(200, "three.json"),
        Fixture(200, "three.json"),
        Fixture(400, "error_400.json"),
        Fixture(429, "error_429_minutely.json"),
        Fixture(429, "error_429_hourly.json"),
        Fixture(429, "error_429_daily.json"),
        Body(500, "upstream broke"),
        Silence,
        Fixture(200, "truncated.json"),
        Fixture(200, "mismatch.json"),
    ]);
    let stations = three_stations();
    let client = Client::new(&server.base, &stations, Duration::from_millis(500)).expect("client");
    let mut poller = Poller::new(stations.clone(), Duration::from_secs(15 * 60), 7);

    // 200: three readings, the next poll after the 13:00 quarter hour.
    let cycle = poller.handle(NOW, client.fetch());
    assert_eq!(cycle.readings.len(), 3);
    let quarter = 1_752_498_000_000; // 13:00
    assert!(
        (quarter + 30_000..quarter + 120_000).contains(&cycle.next_at_ms),
        "{}",
        cycle.next_at_ms
    );
    for ((id, payload), station) in cycle.readings.iter().zip(&stations) {
        assert_eq!(id, &station.id);
        let reading = parse_json(payload, 0).expect("valid weather-raw");
        assert_eq!(reading.timestamp_ms, 1_752_497_100_000);
    }
    let fairbanks: serde_json::Value = serde_json::from_slice(&cycle.readings[2].1).unwrap();
    assert_eq!(fairbanks["pressure"], serde_json::Value::Null, "null stays missing");
    assert!(fairbanks["temperature"].is_number());

    // The same `current.time` again: nothing new to publish.
    let cycle = poller.handle(NOW + 15 * MINUTE, client.fetch());
    assert!(cycle.readings.is_empty());
    assert_eq!(poller.stats().duplicates, 3);

    // 400: the request is wrong; no fast retry, the next regular poll.
    let t = NOW + 16 * MINUTE; // 13:06
    let cycle = poller.handle(t, client.fetch());
    assert!(cycle.readings.is_empty());
    assert!(cycle.next_at_ms >= quarter + 15 * MINUTE, "{}", cycle.next_at_ms);

    // 429: wait for the reset the reason names.
    let resets = [t + MINUTE - (t % MINUTE), 1_752_501_600_000, 1_752_537_600_000]; // 13:07, 14:00, next midnight
    for (reset, wait) in resets.iter().zip(["minutely", "hourly", "daily"]) {
        let cycle = poller.handle(t, client.fetch());
        assert!(cycle.readings.is_empty());
        assert!(cycle.wait.starts_with(wait), "{}", cycle.wait);
        assert!(
            (reset + 1_000..reset + 31_000).contains(&cycle.next_at_ms),
            "{wait}: {}",
            cycle.next_at_ms
        );
    }

    // 500, timeout, truncated body, location count mismatch: exponential backoff.
    for (n, label) in ["500", "timeout", "malformed", "malformed"].iter().enumerate() {
        let fetch = client.fetch();
        assert_eq!(&fetch.label(), label);
        if *label == "malformed" {
            assert!(matches!(fetch, Fetch::Malformed(_)));
        }
        let cycle = poller.handle(t, fetch);
        assert!(cycle.readings.is_empty(), "nothing is published from a failed request");
        let full = 30_000u64 << n;
        let delay = cycle.next_at_ms - t;
        assert!((full / 2..full).contains(&delay), "failure {}: {delay} ms", n + 1);
    }

    // One request per cycle, for every station at once, in the documented form.
    let requests = server.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 10);
    let expected = format!(
        "GET /v1/forecast?latitude={},{},{}&longitude={},{},{}&current=temperature_2m,relative_humidity_2m,surface_pressure,wind_speed_10m,wind_direction_10m,precipitation&timeformat=unixtime&wind_speed_unit=ms HTTP/1.1",
        stations[0].latitude,
        stations[1].latitude,
        stations[2].latitude,
        stations[0].longitude,
        stations[1].longitude,
        stations[2].longitude
    );
    assert_eq!(requests[0], expected);
    let stats = poller.stats();
    assert_eq!((stats.fetched, stats.published, stats.invalid), (6, 3, 0));
    assert_eq!(stats.requests.get("429"), Some(&3));
}

#[test]
fn a_single_location_answers_with_an_object() {
    let server = FixtureServer::start(vec![Answer::Fixture(200, "one.json")]);
    let stations = vec![three_stations().remove(0)];
    let client = Client::new(&server.base, &stations, Duration::from_secs(5)).expect("client");
    let mut poller = Poller::new(stations, Duration::from_secs(15 * 60), 1);
    let cycle = poller.handle(NOW, client.fetch());
    assert_eq!(cycle.readings.len(), 1);
    assert_eq!(cycle.readings[0].0, "berlin-tegel");
}

#[test]
fn an_unreachable_server_is_a_transport_failure() {
    let port = crate::common::free_port();
    let stations = vec![three_stations().remove(0)];
    let client = Client::new(&format!("http://127.0.0.1:{port}"), &stations, Duration::from_secs(5)).expect("client");
    let fetch = client.fetch();
    assert_eq!(fetch.label(), "error", "{fetch:?}");
}

/// Writes `stations` as a catalogue file.
fn catalogue_file(dir: &std::path::Path, stations: &[Station]) -> PathBuf {
    let mut text = String::new();
    for s in stations {
        text.push_str(&format!(
            "[[station]]\nid = {:?}\nname = {:?}\nlatitude = {:?}\nlongitude = {:?}\nelevation = {:?}\n\n",
            s.id, s.name, s.latitude, s.longitude, s.elevation
        ));
    }
    let path = dir.join("stations.toml");
    std::fs::write(&path, text).expect("catalogue file");
    path
}

#[test]
#[cfg_attr(
    no_test_broker,
    ignore = "needs a Kafka broker: WEATHERFLOW_TEST_BROKERS=$(scripts/test-broker.sh up)"
)]
fn open_meteo_readings_flow_through_kafka_into_windows() {
    use crate::broker::{Reader, brokers, fresh_topics, signal};
    use clap::Parser;
    use std::sync::atomic::{AtomicBool, Ordering};

    let Some(brokers) = brokers() else { return };
    let settings = fresh_topics(&brokers, "openmeteo", 4);
    let server = FixtureServer::start(vec![Answer::Fixture(200, "three.json")]);
    let dir = tempfile::tempdir().expect("temp dir");
    let stations = three_stations();
    let catalogue = catalogue_file(dir.path(), &stations);

    // The producer, in this process: one cycle is all the fixture server answers.
    let metrics_port = crate::common::free_port();
    let metrics_addr = format!("127.0.0.1:{metrics_port}");
    let cli = weatherflow::config::Cli::try_parse_from([
        "weatherflow",
        "produce",
        "--from",
        "open-meteo",
        "--stations",
        &crate::common::arg(&catalogue),
        "--base-url",
        &server.base,
        "--brokers",
        &brokers,
        "--topic",
        &settings.topics.raw,
        "--features-topic",
        &settings.topics.features,
        "--predictions-topic",
        &settings.topics.predictions,
        "--dlq-topic",
        &settings.topics.dlq,
        "--checkpoint-topic",
        &settings.topics.checkpoints,
        "--state-topic",
        &settings.topics.state,
        "--api",
        &metrics_addr,
    ])
    .expect("produce arguments parse");
    let Some(weatherflow::config::Command::Produce(args)) = cli.command else {
        panic!("not produce")
    };
    let config = args.into_config().expect("valid produce configuration");
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let producer = std::thread::spawn(move || weatherflow::produce::produce(&config, &flag));

    let mut raw = Reader::new(&brokers, &settings.topics.raw);
    raw.until(Duration::from_secs(60), "three readings", |m| m.len() >= 3);
    let mut keys: Vec<String> = raw
        .messages
        .iter()
        .map(|m| String::from_utf8_lossy(m.key.as_deref().unwrap_or_default()).into_owned())
        .collect();
    keys.sort();
    assert_eq!(keys, ["berlin-tegel", "fairbanks", "sydney"]);
    let metrics = crate::http::until(metrics_port, "/metrics", Duration::from_secs(30), |a| {
        a.text()
            .contains(r#"weatherflow_upstream_requests_total{status="200"} 1"#)
    })
    .text();
    assert!(metrics.contains("weatherflow_upstream_readings_total 3"), "{metrics}");
    assert!(metrics.contains("weatherflow_upstream_duplicates_total 0"), "{metrics}");
    assert_eq!(crate::http::get(metrics_port, "/health").json()["role"], "produce");

    // The pipeline reads them (they are in the topic before it starts, so none is late)
    // and, once the partitions go quiet, closes their windows.
    let pipeline = crate::broker::pipeline(&settings, "openmeteo-test", &[]);
    let mut features = Reader::new(&brokers, &settings.topics.features);
    // Each reading lies in the five windows whose end is within five minutes after it.
    features.until(Duration::from_secs(120), "15 windows", |m| m.len() >= 15);
    signal(pipeline.id(), "-TERM");
    let out = crate::common::wait(pipeline, Duration::from_secs(60));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    stop.store(true, Ordering::Relaxed);
    let summary = producer
        .join()
        .expect("producer thread")
        .expect("producer ends cleanly");
    assert_eq!(summary.sent, 3);

    let mut seen = std::collections::BTreeMap::new();
    for m in &features.messages {
        let f: serde_json::Value = serde_json::from_slice(&m.payload).expect("features JSON");
        let id = f["station_id"].as_str().unwrap().to_owned();
        *seen.entry(id).or_insert(0) += 1;
        assert_eq!(f["count"], 1);
    }
    assert_eq!(seen.values().copied().collect::<Vec<_>>(), [5, 5, 5], "{seen:?}");
    let berlin_raw: serde_json::Value = serde_json::from_slice(
        &raw.messages
            .iter()
            .find(|m| m.key.as_deref() == Some(b"berlin-tegel".as_slice()))
            .unwrap()
            .payload,
    )
    .unwrap();
    let berlin = features
        .messages
        .iter()
        .map(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap())
        .find(|f| f["station_id"] == "berlin-tegel")
        .unwrap();
    assert_eq!(berlin["temperature"]["mean"], berlin_raw["temperature"]);
}
