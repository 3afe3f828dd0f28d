//! `weatherflow bench` as a user runs it: the real binary, its children, its table and
//! its JSON. The figures themselves vary with the machine; what is checked is that each
//! run did the whole job (readings and windows are exact for a fault-free generator) and
//! that every measured field is present and sane.

use std::path::Path;

use serde_json::Value;

use crate::broker::brokers;
use crate::common::{arg, run_binary};

/// 600 readings per station at a 10 s cadence: minutes 0..=99 hold readings, so each
/// station has windows ending at minutes 1..=104.
const WINDOWS_PER_STATION: u64 = 104;

fn bench(args: &[&str]) -> (Value, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("bench.json");
    // `--json` first: anything after a `--` in `args` belongs to the runs.
    let mut all: Vec<String> = vec!["bench".into(), "--json".into(), arg(&json)];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    let output = run_binary(&all);
    let text = std::fs::read_to_string(&json).expect("bench wrote its JSON");
    (
        serde_json::from_str(&text).expect("bench JSON parses"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

fn runs(v: &Value) -> &Vec<Value> {
    v["runs"].as_array().expect("runs array")
}

/// Every measured field is there and plausible.
fn check_measured(run: &Value) {
    let f = |k: &str| run[k].as_f64().unwrap_or_else(|| panic!("{k} missing in {run}"));
    assert!(f("events_per_s") > 0.0 && f("windows_per_s") > 0.0, "{run}");
    assert!(f("events_per_cpu_s") > 0.0 && f("cpu_s") > 0.0, "{run}");
    assert!(f("wall_s") > 0.0, "{run}");
    assert!(
        f("peak_rss_bytes") > (4 << 20) as f64,
        "a whole process is more than 4 MiB: {run}"
    );
    assert!(f("rss_per_station_bytes") > 0.0, "{run}");
    let (p50, p99, max) = (f("emit_p50_ms"), f("emit_p99_ms"), f("emit_max_ms"));
    assert!(p50 <= p99 && p99 <= max, "latency quantiles out of order: {run}");
    assert_eq!(run["interrupted"], Value::Bool(false));
}

#[test]
fn bench_runs_each_worker_count_in_its_own_process() {
    let (v, table) = bench(&[
        "--events",
        "60000",
        "--stations",
        "100",
        "--workers",
        "1,2",
        "--no-ml",
        "--no-faults",
        "--",
        "--max-ahead",
        "5m",
    ]);
    assert_eq!(v["run_args"], serde_json::json!(["--max-ahead", "5m"]));
    let runs = runs(&v);
    assert_eq!(runs.len(), 2, "{v}");
    for (run, workers) in runs.iter().zip([1, 2]) {
        check_measured(run);
        assert_eq!(run["workers"], workers);
        assert_eq!(run["source"], "generator");
        assert_eq!(run["ml"], false);
        assert_eq!(run["readings"], 60_000, "every reading entered");
        assert_eq!(run["windows"], 100 * WINDOWS_PER_STATION, "every window left");
        assert_eq!(run["predictions"], 0);
    }
    assert_eq!(v["medians"].as_array().map(Vec::len), Some(2));
    assert!(v["cpus"].as_u64().is_some_and(|c| c >= 1));
    // The table went to stdout (the JSON to its file): a header and one row per run.
    assert!(table.contains("events/s") && table.contains("ev/CPU-s"), "{table}");
    assert_eq!(
        table.lines().filter(|l| l.starts_with("generator")).count(),
        2,
        "{table}"
    );
}

#[test]
fn bench_replays_a_file_with_the_ml_stage() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = dir.path().join("raw.jsonl");
    run_binary(&[
        "generate".into(),
        "--stations".into(),
        "50".into(),
        "--duration".into(),
        "100m".into(),
        "--interval".into(),
        "10s".into(),
        "--no-faults".into(),
        "--start".into(),
        "2026-11-20T00:00:00Z".into(),
        "--output".into(),
        arg(&input),
    ]);
    let (v, _) = bench(&[
        "--source",
        "file",
        "--input",
        &arg(&input),
        "--stations",
        "50",
        "--workers",
        "2",
        "--models",
        &arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("models").as_path()),
    ]);
    let runs = runs(&v);
    assert_eq!(runs.len(), 1);
    check_measured(&runs[0]);
    assert_eq!(runs[0]["source"], "file");
    assert_eq!(runs[0]["readings"], 30_000);
    assert_eq!(runs[0]["windows"], 50 * WINDOWS_PER_STATION);
    assert_eq!(
        runs[0]["predictions"],
        50 * WINDOWS_PER_STATION,
        "one prediction per window"
    );
}

#[test]
fn bench_rejects_impossible_plans() {
    for (args, says) in [
        (vec!["--workers", "0"], "--workers"),
        (vec!["--stations", "0"], "--stations"),
        (vec!["--source", "file"], "--input"),
        (vec!["--source", "kafka"], "--brokers"),
        (vec!["--repeat", "0"], "--repeat"),
        // A bad pass-through flag fails the child; the bench shows the child's own error.
        (
            vec![
                "--events",
                "100",
                "--stations",
                "5",
                "--workers",
                "1",
                "--",
                "--no-such-flag",
            ],
            "--no-such-flag",
        ),
    ] {
        let mut all = vec!["bench".to_owned()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let output = crate::common::wait(crate::common::spawn(&all), std::time::Duration::from_secs(30));
        assert!(!output.status.success(), "{args:?} should fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

#[test]
#[cfg_attr(
    no_test_broker,
    ignore = "needs a Kafka broker: WEATHERFLOW_TEST_BROKERS=$(scripts/test-broker.sh up)"
)]
fn bench_through_kafka_reads_the_loaded_topic_to_its_end() {
    let Some(brokers) = brokers() else { return };
    let (v, _) = bench(&[
        "--source",
        "kafka",
        "--brokers",
        &brokers,
        "--events",
        "30000",
        "--stations",
        "50",
        "--workers",
        "1,2",
        "--no-ml",
        "--no-faults",
        "--partitions",
        "3",
    ]);
    let runs = runs(&v);
    assert_eq!(runs.len(), 2, "{v}");
    for run in runs {
        check_measured(run);
        assert_eq!(run["source"], "kafka");
        // --stop-at-end: the run ended because it had read everything, not on a timeout.
        assert_eq!(run["readings"], 30_000, "{run}");
        assert_eq!(run["consumer_lag"], 0, "{run}");
        assert_eq!(
            run["windows"],
            50 * WINDOWS_PER_STATION,
            "the same windows as the generator"
        );
    }
}
