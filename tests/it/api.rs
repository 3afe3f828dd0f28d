//! The REST API and dashboard over real HTTP with the pipeline running, the dashboard in
//! headless Chromium, and `serve` rebuilding the same answers from the real broker.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use clap::Parser;
use serde_json::Value;
use weatherflow::config::{Cli, Command as Sub};
use weatherflow::run::Summary;

use crate::broker::{brokers, fresh_topics, topic_args};
use crate::common::{free_port, run_in_process_with, wait};
use crate::http::{Answer, get, request, until};

/// A pipeline running in this process on its own thread, with its API on `port`.
struct Pipeline {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Summary>>,
}

impl Pipeline {
    fn start(extra: &[String]) -> Pipeline {
        let port = free_port();
        let stop = Arc::new(AtomicBool::new(false));
        let mut args: Vec<String> = vec!["--api".into(), format!("127.0.0.1:{port}")];
        args.extend_from_slice(extra);
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_in_process_with(&args, flag)
        });
        Pipeline {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Summary {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("joined once");
        thread.join().expect("the pipeline thread ends cleanly")
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // A failed assertion must not leave the run going behind the next test.
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn live_generator(stations: &str) -> Vec<String> {
    // One hour of event time per second: windows close 60 times a second per station.
    [
        "-w",
        "2",
        "--stations",
        stations,
        "--speed",
        "3600",
        "--start",
        "2026-11-20T00:00:00Z",
    ]
    .map(String::from)
    .to_vec()
}

/// A bounded generator run that keeps serving once its input is done (`--linger`), so a
/// test can query final, complete answers.
fn lingering_job(stations: &str, events: &str) -> Vec<String> {
    [
        "--stations",
        stations,
        "--events",
        events,
        "--speed",
        "max",
        "--start",
        "2026-11-20T00:00:00Z",
        "--linger",
    ]
    .map(String::from)
    .to_vec()
}

fn assert_error(a: &Answer, status: u16, needle: &str) {
    assert_eq!(a.status, status, "{}", a.text());
    assert_eq!(a.header("content-type"), Some("application/json"));
    let error = a.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(error.contains(needle), "{error:?} lacks {needle:?}");
}

#[test]
fn routes_over_real_http_with_the_pipeline_running() {
    let pipeline = Pipeline::start(&live_generator("8"));
    let port = pipeline.port;
    until(port, "/ready", Duration::from_secs(60), |a| a.status == 200);
    let stations = until(port, "/stations", Duration::from_secs(60), |a| {
        let v = a.json();
        v["count"] == 8
            && v["stations"].as_array().is_some_and(|s| {
                s.iter()
                    .all(|s| s["forecast_1h"].is_number() && s["windows"].as_u64() >= Some(3))
            })
    })
    .json();
    assert_eq!(stations["attribution"], Value::Null);
    let id = stations["stations"][0]["station_id"].as_str().unwrap().to_owned();

    assert_eq!(get(port, "/health").json()["role"], "run");
    let ready = get(port, "/ready").json();
    assert!(ready["watermark"].as_str().is_some_and(|w| w.ends_with('Z')), "{ready}");
    let p = get(port, &format!("/predictions/{id}")).json();
    assert_eq!(p["station_id"], id.as_str());
    let horizons: Vec<u64> = p["forecasts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["horizon_hours"].as_u64().unwrap())
        .collect();
    assert_eq!(horizons, [1, 6, 24]);
    assert!(p["models"]["forecast"].is_string() && p["anomaly"]["score"].is_number());
    let f = get(port, &format!("/features/{id}")).json();
    assert!(f["temperature"]["mean"].is_number() && f["window_start"].is_string());
    let h = get(port, &format!("/features/{id}/history?limit=3")).json();
    assert_eq!(h["count"], 3);
    let ends: Vec<&str> = h["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["window_end"].as_str().unwrap())
        .collect();
    assert!(ends.windows(2).all(|w| w[0] < w[1]), "ascending: {ends:?}");
    let from = ends[1];
    let h = get(port, &format!("/predictions/{id}/history?from={from}&limit=10000")).json();
    assert!(h["items"][0]["window_end"].as_str().unwrap() >= from);
    assert!(get(port, "/anomalies?limit=5").json()["items"].is_array());

    // Every docs/design.md §8 series the generator run can produce, no station labels.
    let metrics = get(port, "/metrics");
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = metrics.text();
    for name in [
        r#"weatherflow_records_in_total{source="generator"}"#,
        r#"weatherflow_records_invalid_total{reason="out_of_range"}"#,
        "weatherflow_records_late_total",
        "weatherflow_records_duplicate_total",
        "weatherflow_windows_emitted_total",
        "weatherflow_predictions_total",
        "weatherflow_anomalies_total",
        "weatherflow_watermark_lag_seconds",
        "weatherflow_window_emit_latency_seconds_bucket",
        r#"weatherflow_http_request_duration_seconds_bucket{le="0.005",route="prediction"}"#,
        "weatherflow_store_stations 8",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}");
    }
    assert!(!text.contains(&id), "a station id leaked into a metrics label");
    let doc = get(port, "/openapi.json").json();
    assert!(doc["paths"]["/predictions/{station_id}/history"]["get"].is_object());
    let page = get(port, "/");
    assert!(page.header("content-type").unwrap().starts_with("text/html"));

    // Bad input over the wire: JSON errors with 4xx, never a 5xx.
    assert_error(&get(port, "/predictions/no-such-station"), 404, "unknown station");
    assert_error(&get(port, "/nope"), 404, "no route");
    assert_error(&get(port, &format!("/features/{}", "x".repeat(65))), 400, "64");
    assert_error(&get(port, &format!("/features/{id}/history?to=tomorrow")), 400, "to=");
    assert_error(&get(port, "/anomalies?limit=0"), 400, "limit");
    let post = request(port, "POST", "/stations", &[("content-length", "0")]).unwrap();
    assert_error(&post, 405, "POST");
    assert_eq!(post.header("allow"), Some("GET, HEAD, OPTIONS"));
    let big = request(port, "POST", "/stations", &[("content-length", "10000000")]).unwrap();
    assert_error(&big, 413, "too large");

    let summary = pipeline.finish();
    assert!(summary.totals.windows_emitted > 0 && summary.interrupted);
}

/// Where test artifacts go: `target/test-artifacts/`.
fn artifact(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("artifact directory");
    dir.join(name)
}

fn chromium() -> Option<String> {
    if let Ok(bin) = std::env::var("CHROMIUM") {
        return Some(bin);
    }
    for bin in ["chromium", "chromium-browser", "google-chrome"] {
        let found = Command::new(bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if found {
            return Some(bin.into());
        }
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but Chromium is missing: .ci/run installs Debian's chromium");
    }
    eprintln!("skipping: no chromium in PATH (apt install chromium, or set CHROMIUM=/path)");
    None
}

/// Runs headless Chromium on `url` with `extra` flags; returns stdout. Killed (and the
/// test failed) if it outlives its deadline.
fn headless(bin: &str, url: &str, extra: &[String]) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            // Virtual time runs the page's polling timers without waiting in real time;
            // fetches to the API still complete for real while it is paused.
            "--virtual-time-budget=8000",
            "--timeout=30000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromium starts");
    let output = wait(child, Duration::from_secs(90));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn dashboard_shows_stations_and_plots_in_headless_chromium() {
    let Some(bin) = chromium() else { return };
    // As a deployment showing Open-Meteo data runs it: the 20 catalogue stations, named,
    // and the page must credit the source.
    let catalogue = format!("{}/stations.toml", env!("CARGO_MANIFEST_DIR"));
    let mut args = live_generator(&catalogue);
    args.extend(["--attribution", "open-meteo"].map(String::from));
    let pipeline = Pipeline::start(&args);
    let port = pipeline.port;
    until(port, "/stations", Duration::from_secs(60), |a| {
        let v = a.json();
        v["count"] == 20
            && v["stations"]
                .as_array()
                .is_some_and(|s| s.iter().all(|s| s["forecast_1h"].is_number()))
    });
    let url = format!("http://127.0.0.1:{port}/");
    let dom = headless(&bin, &url, &["--dump-dom".into()]);
    std::fs::write(artifact("dashboard.html"), &dom).expect("save the DOM");
    let body_tag = dom
        .split("<body")
        .nth(1)
        .and_then(|b| b.split('>').next())
        .unwrap_or_default();
    assert!(
        body_tag.contains(r#"data-state="ready""#),
        "the page never got ready: <body{body_tag}>"
    );
    let stations = dom.matches(r#"class="station-row"#).count();
    assert!(stations >= 20, "{stations} station rows in the DOM");
    assert!(dom.contains("data-station=\"berlin-tegel\""), "catalogue ids");
    assert!(dom.contains("Berlin Tegel"), "catalogue names");
    let points: usize = dom
        .split("data-points=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(points > 1, "the chart plotted {points} points");
    assert_eq!(
        dom.matches(r#"class="forecast-marker""#).count(),
        3,
        "one marker per horizon"
    );
    let shot = artifact("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    headless(
        &bin,
        &url,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1400,900".into(),
        ],
    );
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000),
        "no screenshot at {}",
        shot.display()
    );
    eprintln!("dashboard screenshot: {}", shot.display());
    pipeline.finish();

    // The generator's faults are single-reading spikes that a 5-minute mean dilutes, so
    // the live run above flags nothing; a year of real data with labelled faults does.
    let labelled = format!("{}/data/labelled/miami_fl_faults_rep0.csv", env!("CARGO_MANIFEST_DIR"));
    let replay = Pipeline::start(&["-w", "2", "--source", "file", "--input", &labelled, "--linger"].map(String::from));
    until(replay.port, "/ready", Duration::from_secs(120), |a| {
        a.json()["input_complete"] == true
    });
    let feed = get(replay.port, "/anomalies?limit=50").json();
    assert!(feed["count"].as_u64() > Some(0), "no anomalies in a labelled year");
    let dom = headless(
        &bin,
        &format!("http://127.0.0.1:{}/", replay.port),
        &["--dump-dom".into()],
    );
    std::fs::write(artifact("dashboard-anomalies.html"), &dom).expect("save the DOM");
    let items = dom.matches(r#"class="anomaly-item"#).count();
    assert!(items > 0, "the anomaly feed shows nothing");
    let reason = feed["items"][0]["anomaly"]["reasons"][0].as_str().unwrap_or_default();
    assert!(
        !reason.is_empty() && dom.contains(reason),
        "the feed lacks the reason {reason:?}"
    );
    replay.finish();
}

/// The answers `serve` and the pipeline must agree on, for one station.
fn station_answers(port: u16, id: &str) -> Vec<Value> {
    [
        format!("/predictions/{id}"),
        format!("/features/{id}"),
        format!("/predictions/{id}/history?limit=10000"),
        format!("/features/{id}/history?limit=10000"),
    ]
    .iter()
    .map(|path| {
        let a = get(port, path);
        assert_eq!(a.status, 200, "{path}: {}", a.text());
        a.json()
    })
    .collect()
}

fn sorted_anomalies(port: u16) -> Vec<(String, String)> {
    let feed = get(port, "/anomalies?limit=1000").json();
    let mut items: Vec<(String, String)> = feed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["window_end"].as_str().unwrap().into(),
                p["station_id"].as_str().unwrap().into(),
            )
        })
        .collect();
    // Anomalies of one window end may arrive in any order from the partitions.
    items.sort();
    items
}

#[test]
#[cfg_attr(
    no_test_broker,
    ignore = "needs a Kafka broker: WEATHERFLOW_TEST_BROKERS=$(scripts/test-broker.sh up)"
)]
fn serve_rebuilds_the_same_answers_from_the_broker() {
    let Some(brokers) = brokers() else { return };
    let settings = fresh_topics(&brokers, "serve", 4);
    // Three hours of readings from 6 stations, then the pipeline lingers to be compared.
    let mut args: Vec<String> = vec!["-w".into(), "2".into()];
    args.extend(lingering_job("6", "6480"));
    args.extend(topic_args(&settings, "serve-test"));
    let pipeline = Pipeline::start(&args);
    until(pipeline.port, "/ready", Duration::from_secs(120), |a| {
        a.status == 200 && a.json()["input_complete"] == true
    });

    let serve_port = free_port();
    let cli = Cli::try_parse_from([
        "weatherflow",
        "serve",
        "--brokers",
        &brokers,
        "--features-topic",
        &settings.topics.features,
        "--predictions-topic",
        &settings.topics.predictions,
        "--api",
        &format!("127.0.0.1:{serve_port}"),
        "--from-beginning",
    ])
    .expect("serve arguments parse");
    let Some(Sub::Serve(serve_args)) = cli.command else {
        panic!("not serve")
    };
    let config = serve_args.into_config().expect("valid serve configuration");
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let server = std::thread::spawn(move || weatherflow::serve::serve(&config, &flag));
    until(serve_port, "/ready", Duration::from_secs(60), |a| a.status == 200);
    assert_eq!(get(serve_port, "/health").json()["role"], "serve");

    let expected = get(pipeline.port, "/stations").json();
    assert_eq!(expected["count"], 6);
    // Ready means caught up with the topics as they were when serve started; the
    // pipeline had finished by then, so the lists must already agree.
    assert_eq!(get(serve_port, "/stations").json(), expected);
    for station in expected["stations"].as_array().unwrap() {
        let id = station["station_id"].as_str().unwrap();
        assert_eq!(
            station_answers(serve_port, id),
            station_answers(pipeline.port, id),
            "{id}"
        );
    }
    assert_eq!(sorted_anomalies(serve_port), sorted_anomalies(pipeline.port));

    stop.store(true, Ordering::Relaxed);
    let summary = server.join().expect("serve thread").expect("serve ends cleanly");
    assert!(
        summary.features > 0 && summary.predictions > 0 && summary.invalid == 0,
        "{summary}"
    );
    pipeline.finish();
}

/// schemathesis, when installed (`.ci/run` installs it; `SCHEMATHESIS` may point at it).
fn schemathesis() -> Option<PathBuf> {
    let path = std::env::var_os("SCHEMATHESIS").map(PathBuf::from).or_else(|| {
        let home = std::env::var_os("HOME")?;
        Some(PathBuf::from(home).join(".cache/weatherflow/schemathesis-venv/bin/schemathesis"))
    })?;
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "CI=true but schemathesis is missing at {}: .ci/run installs it",
            path.display()
        );
    }
    eprintln!("skipping: no schemathesis (scripts/fuzz-api.sh installs it into ~/.cache/weatherflow)");
    None
}

#[test]
fn schemathesis_finds_no_5xx_and_no_schema_violation() {
    let Some(bin) = schemathesis() else { return };
    let mut args: Vec<String> = vec!["-w".into(), "2".into()];
    args.extend(lingering_job("10", "60000"));
    let pipeline = Pipeline::start(&args);
    let port = pipeline.port;
    until(port, "/ready", Duration::from_secs(60), |a| {
        a.status == 200 && a.json()["input_complete"] == true
    });
    let report = artifact("schemathesis");
    let child = Command::new(bin)
        .args(["run", &format!("http://127.0.0.1:{port}/openapi.json")])
        .args([
            "--checks",
            "all",
            "--max-examples",
            "100",
            "--seed",
            "1",
            "--workers",
            "1",
        ])
        // Station ids are bounded in bytes, which JSON Schema cannot say; with ASCII
        // strings, characters are bytes and the documented maxLength is exact.
        .args(["--generation-codec", "ascii"])
        .args(["--no-color", "--report", "junit", "--report-dir"])
        .arg(&report)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("schemathesis starts");
    let output = wait(child, Duration::from_secs(600));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("No issues found"), "{text}");
    pipeline.finish();
}

#[test]
fn a_two_process_cluster_serves_every_station_from_process_0() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hostfile = crate::common::hostfile(dir.path(), "api");
    let job = lingering_job("10", "12000");
    // The reference: one process, one worker, same input.
    let single = Pipeline::start(&job);
    until(single.port, "/ready", Duration::from_secs(120), |a| {
        a.json()["input_complete"] == true
    });
    let port = free_port();
    let processes: Vec<_> = (0..2)
        .map(|p| {
            let mut args = job.to_vec();
            args.extend(
                [
                    "-n",
                    "2",
                    "-p",
                    &p.to_string(),
                    "-w",
                    "2",
                    "-h",
                    &crate::common::arg(&hostfile),
                    "--api",
                    &format!("127.0.0.1:{port}"),
                ]
                .map(String::from),
            );
            crate::common::spawn(&args)
        })
        .collect();
    until(port, "/ready", Duration::from_secs(120), |a| {
        a.status == 200 && a.json()["input_complete"] == true
    });
    let expected = get(single.port, "/stations").json();
    assert_eq!(expected["count"], 10);
    assert_eq!(get(port, "/stations").json(), expected, "process 0 holds every station");
    for station in expected["stations"].as_array().unwrap() {
        let id = station["station_id"].as_str().unwrap();
        assert_eq!(station_answers(port, id), station_answers(single.port, id), "{id}");
    }
    single.finish();
    let pids: Vec<String> = processes.iter().map(|c| c.id().to_string()).collect();
    // Process 1 has finished with its input; process 0 lingers until SIGTERM.
    let _ = Command::new("kill").arg("-TERM").args(&pids).status();
    for child in processes {
        let out = wait(child, Duration::from_secs(60));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}
