//! ML in and around the dataflow: training determinism, the committed models, `evaluate`
//! on real data, predictions from the pipeline, and hot reload without losing state.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle};
use weatherflow::metrics::Metrics;
use weatherflow::ml::anomaly::AnomalyModel;
use weatherflow::ml::forecast::ForecastModel;
use weatherflow::ml::registry::{self, Kind, Metadata};
use weatherflow::ml::reload::{Check, Loader};
use weatherflow::schema::{Prediction, Trend, VariableStats, WindowFeatures};

use crate::common::{arg, run_binary, run_in_process, sorted_lines};

const HOUR_MS: u64 = 3_600_000;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn training_is_deterministic_and_round_trips() {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    for dir in &dirs {
        run_binary(&[
            "train".into(),
            "--data".into(),
            arg(&repo("data/historical/*.csv")),
            "--out".into(),
            arg(dir.path()),
            "--no-loso".into(),
        ]);
    }
    for kind in ["forecast", "anomaly"] {
        let a = read(&dirs[0].path().join(kind).join("v1/model.json"));
        let b = read(&dirs[1].path().join(kind).join("v1/model.json"));
        assert_eq!(a, b, "{kind}: same data and seed must give the same bytes");
        assert_eq!(read(&dirs[0].path().join(kind).join("LATEST")), b"v1\n");
    }
    // Serde round trips of both models, and of the committed ones.
    for dir in [dirs[0].path().to_owned(), repo("models")] {
        let models = registry::load_latest(&dir).expect("registry loads");
        let f: ForecastModel = serde_json::from_str(&serde_json::to_string(&models.forecast.model).unwrap()).unwrap();
        assert_eq!(f, models.forecast.model);
        let a: AnomalyModel = serde_json::from_str(&serde_json::to_string(&models.anomaly.model).unwrap()).unwrap();
        assert_eq!(a, models.anomaly.model);
        let row = [3.0, -1.0, 0.5, 0.2, 0.4, 2.0, 1.0];
        assert_eq!(a.forest.score(&row), models.anomaly.model.forest.score(&row));
        let meta = registry::metadata(&dir, Kind::Forecast, &models.forecast.version).expect("metadata");
        assert!(!meta.trained_at.is_empty() && !meta.features.is_empty());
    }
    // A second training run becomes v2 and LATEST follows.
    run_binary(&[
        "train".into(),
        "--data".into(),
        arg(&repo("data/historical/greensboro_nc.csv")),
        "--out".into(),
        arg(dirs[0].path()),
        "--no-loso".into(),
    ]);
    assert_eq!(read(&dirs[0].path().join("forecast/LATEST")), b"v2\n");
}

#[test]
fn evaluate_beats_persistence_on_a_real_slice() {
    // Two months of one labelled station: enough for the 24 h warm-up per segment.
    let dir = tempfile::tempdir().unwrap();
    let text = String::from_utf8(read(&repo("data/labelled/greensboro_nc_faults_rep0.csv"))).unwrap();
    let slice: String = text.lines().take(1 + 24 * 59).map(|l| format!("{l}\n")).collect();
    let path = dir.path().join("slice.csv");
    std::fs::write(&path, slice).unwrap();
    let out = run_binary(&[
        "evaluate".into(),
        "--data".into(),
        arg(&path),
        "--models".into(),
        arg(&repo("models")),
        "--json".into(),
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let h1 = &report["forecast"]["overall"]["1"];
    let (mae, persistence) = (h1["mae"].as_f64().unwrap(), h1["persistence_mae"].as_f64().unwrap());
    assert!(h1["n"].as_u64().unwrap() > 1000, "{h1}");
    assert!(mae < persistence, "1 h MAE {mae} must beat persistence {persistence}");
    let coverage = h1["coverage80"].as_f64().unwrap();
    assert!((0.65..0.95).contains(&coverage), "coverage {coverage}");
    assert!(
        report["forecast"]["stations"]["greensboro_nc"]["24"]["n"]
            .as_u64()
            .unwrap()
            > 0
    );
    let auc = report["anomaly"]["overall"]["auc"]
        .as_f64()
        .expect("labelled slice has anomaly metrics");
    assert!(auc > 0.8, "AUC {auc}");
    let types = report["anomaly"]["by_fault_type"].as_object().expect("per fault type");
    assert!(!types.is_empty());
}

#[test]
fn pipeline_predictions_are_complete_and_worker_independent() {
    let dir = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();
    for workers in ["1", "2"] {
        let predictions = dir.path().join(format!("p{workers}.jsonl"));
        let summary = run_in_process(&[
            "-w",
            workers,
            "--stations",
            "20",
            "--events",
            "40000",
            "--speed",
            "max",
            "--start",
            "2026-01-01T00:00:00Z",
            "--predictions",
            &arg(&predictions),
        ]);
        assert_eq!(summary.totals.predictions, summary.totals.windows_emitted);
        outputs.push(sorted_lines(&predictions));
    }
    assert_eq!(
        outputs[0], outputs[1],
        "predictions must not depend on the worker count"
    );
    let latest: Vec<String> = ["forecast", "anomaly"]
        .iter()
        .map(|kind| {
            String::from_utf8(read(&repo("models").join(kind).join("LATEST")))
                .unwrap()
                .trim()
                .to_string()
        })
        .collect();
    let mut variants = std::collections::BTreeSet::new();
    for line in &outputs[0] {
        let p: Prediction = serde_json::from_str(line).expect("valid weather-predictions line");
        assert_eq!(
            (&*p.models.forecast, &*p.models.anomaly),
            (latest[0].as_str(), latest[1].as_str())
        );
        let hours: Vec<u32> = p.forecasts.iter().map(|f| f.horizon_hours).collect();
        assert_eq!(hours, [1, 6, 24]);
        for f in &p.forecasts {
            assert!(f.lower <= f.temperature && f.temperature <= f.upper, "{line}");
            assert!(f.temperature.is_finite());
        }
        assert!((0.0..=1.0).contains(&p.anomaly.score));
        assert_eq!(p.anomaly.is_anomaly, !p.anomaly.reasons.is_empty(), "{line}");
        variants.insert(p.forecast_variant);
    }
    // 40 000 readings of 20 stations every 10 s is under 24 h: all short-history.
    assert_eq!(variants.into_iter().collect::<Vec<_>>(), ["short_history"]);
}

/// Copies `from`'s LATEST version of each kind into `to` as v1.
fn copy_registry(from: &Path, to: &Path) {
    for kind in ["forecast", "anomaly"] {
        let latest = String::from_utf8(read(&from.join(kind).join("LATEST"))).unwrap();
        let dest = to.join(kind).join("v1");
        std::fs::create_dir_all(&dest).unwrap();
        for file in ["model.json", "metadata.json"] {
            std::fs::copy(from.join(kind).join(latest.trim()).join(file), dest.join(file)).unwrap();
        }
        std::fs::write(to.join(kind).join("LATEST"), "v1\n").unwrap();
    }
}

fn stats(mean: f64) -> Option<VariableStats> {
    Some(VariableStats {
        count: 5,
        mean,
        std: Some(0.1),
        min: mean - 0.1,
        max: mean + 0.1,
        slope_per_hour: None,
    })
}

/// Windows of one station every 10 minutes for `hours`, with a daily cycle.
fn windows(hours: u64) -> Vec<WindowFeatures> {
    (1..=hours * 6)
        .map(|i| {
            let end = 1_767_225_600_000 + i * 600_000;
            let phase = (end % (24 * HOUR_MS)) as f64 / (24 * HOUR_MS) as f64 * std::f64::consts::TAU;
            WindowFeatures {
                station_id: "reload".into(),
                window_start: end - 300_000,
                window_end: end,
                count: 5,
                temperature: stats(10.0 + 5.0 * phase.sin()),
                humidity: stats(70.0 - 10.0 * phase.sin()),
                pressure: stats(1010.0),
                wind_speed: stats(3.0),
                trend: Trend::default(),
            }
        })
        .collect()
}

/// Runs the predict operator over `input`; before window `swap_at` a v2 (the same
/// models under a new version) is saved to the registry, and the process's loader is told
/// to check it (the reload thread's job, done here by hand so that the swap point is exact).
fn predict(registry_dir: &Path, input: Vec<WindowFeatures>, swap_at: Option<usize>) -> Vec<Prediction> {
    let models = registry::load_latest(registry_dir).expect("registry loads");
    let dir = registry_dir.to_owned();
    timely::execute_directly(move |worker| {
        let mut handle = InputHandleVec::<u64, WindowFeatures>::new();
        let probe = ProbeHandle::new();
        let out: Rc<RefCell<Vec<Prediction>>> = Rc::default();
        let sink = out.clone();
        let mut loader = Loader::new(dir.clone(), models.clone());
        let subscriber = loader.subscribe();
        worker.dataflow::<u64, _, _>(|scope| {
            weatherflow::dataflow::predict::predictions(
                handle.to_stream(scope),
                models.clone(),
                Some(subscriber),
                Arc::new(Metrics::new(1)),
                Arc::default(),
                None,
                weatherflow::dataflow::StationLimits::unbounded(),
            )
            .predictions
            .inspect(move |p| sink.borrow_mut().push(p.clone()))
            .probe_with(&probe);
        });
        for (i, w) in input.iter().enumerate() {
            if swap_at == Some(i) {
                for (kind, model) in [
                    (Kind::Forecast, serde_json::to_value(&models.forecast.model).unwrap()),
                    (Kind::Anomaly, serde_json::to_value(&models.anomaly.model).unwrap()),
                ] {
                    let meta = Metadata {
                        version: "v2".into(),
                        kind: kind.as_str().into(),
                        trained_at: "2026-11-21T00:00:00Z".into(),
                        data: serde_json::Value::Null,
                        features: vec![],
                        hyperparameters: serde_json::Value::Null,
                        metrics: serde_json::Value::Null,
                    };
                    registry::save(&dir, kind, &model, &meta).expect("save v2");
                }
                assert!(matches!(loader.check_now(), Check::Loaded { .. }));
            }
            handle.advance_to(w.window_end);
            handle.send(w.clone());
            handle.advance_to(w.window_end + 1);
            while probe.less_than(handle.time()) {
                worker.step();
            }
        }
        out.take()
    })
}

#[test]
fn hot_reload_swaps_models_and_keeps_station_state() {
    let input = windows(30);
    let swap_at = 27 * 6; // after 27 h: the station serves the full variant by then
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    copy_registry(&repo("models"), a.path());
    copy_registry(&repo("models"), b.path());
    let swapped = predict(a.path(), input.clone(), Some(swap_at));
    let control = predict(b.path(), input, None);
    assert_eq!(swapped.len(), control.len());
    let versions: Vec<&str> = swapped.iter().map(|p| &*p.models.forecast).collect();
    let first_v2 = versions.iter().position(|v| *v == "v2").expect("v2 reaches the output");
    assert_eq!(first_v2, swap_at, "the worker switches at its next window");
    assert!(versions[first_v2..].iter().all(|v| *v == "v2"));
    assert!(versions[..swap_at].iter().all(|v| *v == "v1"));
    assert_eq!(&*swapped[first_v2].models.anomaly, "v2");
    // State kept: with identical model content, every prediction after the swap equals
    // the uninterrupted run's except for the version label. A station restarted from
    // scratch would fall back to the short-history variant and forget what it learned.
    for (s, c) in swapped.iter().zip(&control) {
        assert_eq!(
            (&s.forecasts, &s.anomaly, &s.forecast_variant),
            (&c.forecasts, &c.anomaly, &c.forecast_variant)
        );
    }
    assert_eq!(swapped[first_v2].forecast_variant, "full");
}
