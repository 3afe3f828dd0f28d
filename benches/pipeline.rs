//! Micro-benchmarks of each stage of the job, on generator readings (1,000 stations at a
//! 10 s cadence, the core benchmark's shape).
//!
//! The dataflow stages cannot run alone, so they are measured cumulatively on the same
//! readings: panes; panes + window reduce; the whole window graph (+ the emitter, which
//! also takes the trend). The difference between two consecutive figures is the cost of the stage added.
//! Each dataflow iteration builds a fresh single-worker graph, feeds every reading minute
//! by minute and steps until the probe is done, so the figures include progress tracking
//! and compaction, as in a run.
//!
//! `cargo bench --bench pipeline` (all), or e.g. `cargo bench --bench pipeline -- forest`.

use std::hint::black_box;
use std::sync::Arc;

use clap::Parser;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle};

use weatherflow::config::{Cli, Command};
use weatherflow::dataflow::{StationLimits, pane, predict, window_stats, windows};
use weatherflow::metrics::Metrics;
use weatherflow::ml::features::{self, Location};
use weatherflow::ml::forecast::StationForecaster;
use weatherflow::ml::history::Obs;
use weatherflow::ml::registry::load_latest;
use weatherflow::ml::station::{Models, StationState};
use weatherflow::schema::{Prediction, Reading, WindowFeatures, floor_minute, format_rfc3339, parse_json};

/// The benchmark input: generator lines, 1,000 stations, `minutes` of event time.
fn lines(minutes: u64) -> Vec<Vec<u8>> {
    let cli = Cli::parse_from([
        "weatherflow",
        "generate",
        "--stations",
        "1000",
        "--interval",
        "10s",
        "--duration",
        &format!("{minutes}m"),
        "--seed",
        "1",
        "--start",
        "2026-11-20T00:00:00Z",
        "--no-faults",
        "--output",
        "unused",
    ]);
    let Some(Command::Generate(args)) = cli.command else {
        panic!("not a generate command");
    };
    let (config, _) = args.into_config().expect("generator config");
    let mut out = Vec::new();
    weatherflow::sources::generator::write_jsonl(&config, &mut out, |_| {}).expect("in memory");
    out.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn readings(lines: &[Vec<u8>]) -> Vec<Reading> {
    lines
        .iter()
        .enumerate()
        .map(|(i, l)| parse_json(l, i as u64).expect("valid generator line"))
        .collect()
}

/// Sends timestamp-ordered `input` at its event minutes, stepping the worker as each
/// minute opens, then closes the input and steps until the graph is done.
fn feed(
    worker: &mut timely::worker::Worker,
    mut handle: InputHandleVec<u64, Reading>,
    probe: &ProbeHandle<u64>,
    input: Vec<Reading>,
) {
    for r in input {
        let minute = floor_minute(r.timestamp_ms);
        if minute > *handle.time() {
            handle.advance_to(minute);
            worker.step();
        }
        handle.send(r);
    }
    handle.close();
    while !probe.done() {
        worker.step();
    }
}

/// How far the graph under test goes.
#[derive(Clone, Copy)]
enum Stage {
    Panes,
    Reduce,
    Windows,
}

/// Feeds `input` (timestamp-ordered) through a fresh graph up to `stage`; returns the
/// number of records that left it.
fn run_stage(input: Vec<Reading>, stage: Stage) -> usize {
    timely::execute_directly(move |worker| {
        let mut handle = InputHandleVec::<u64, Reading>::new();
        let probe = ProbeHandle::new();
        let seen = std::rc::Rc::new(std::cell::Cell::new(0usize));
        let count = seen.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            let stream = handle.to_stream(scope);
            let metrics = Arc::new(Metrics::new(1));
            match stage {
                Stage::Panes => {
                    pane::build_panes(stream, Default::default(), metrics)
                        .0
                        .inner
                        .inspect_batch(move |_, b| count.set(count.get() + b.len()))
                        .probe_with(&probe);
                }
                Stage::Reduce => {
                    let (panes, _collisions) = pane::build_panes(stream, Default::default(), metrics);
                    window_stats(panes)
                        .stream
                        .inspect_batch(move |_, b| count.set(count.get() + b.len()))
                        .probe_with(&probe);
                }
                Stage::Windows => {
                    windows(stream, metrics, StationLimits::unbounded())
                        .features
                        .inspect_batch(move |_, b| count.set(count.get() + b.len()))
                        .probe_with(&probe);
                }
            }
        });
        feed(worker, handle, &probe, input);
        seen.get()
    })
}

/// The window records and predictions of `input`, for the serialisation benchmarks.
fn outputs(input: Vec<Reading>, models: Models) -> (Vec<WindowFeatures>, Vec<Prediction>) {
    timely::execute_directly(move |worker| {
        let mut handle = InputHandleVec::<u64, Reading>::new();
        let probe = ProbeHandle::new();
        let windows_out = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let predictions_out = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let (w, p) = (windows_out.clone(), predictions_out.clone());
        worker.dataflow::<u64, _, _>(|scope| {
            let metrics = Arc::new(Metrics::new(1));
            let features = windows(handle.to_stream(scope), metrics.clone(), StationLimits::unbounded())
                .features
                .inspect(move |x: &WindowFeatures| w.borrow_mut().push(x.clone()));
            predict::predictions(
                features,
                models,
                None,
                metrics,
                Arc::default(),
                None,
                StationLimits::unbounded(),
            )
            .predictions
            .inspect(move |x: &Prediction| p.borrow_mut().push(x.clone()))
            .probe_with(&probe);
        });
        feed(worker, handle, &probe, input);
        (windows_out.take(), predictions_out.take())
    })
}

fn parsing(c: &mut Criterion) {
    let input = lines(10);
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(input.len() as u64));
    group.bench_function("reading_json", |b| {
        b.iter(|| {
            for (i, line) in input.iter().enumerate() {
                black_box(parse_json(black_box(line), i as u64).ok());
            }
        })
    });
    group.finish();
}

fn dataflow(c: &mut Criterion) {
    let input = readings(&lines(30));
    let mut group = c.benchmark_group("dataflow");
    group.sample_size(10);
    group.throughput(Throughput::Elements(input.len() as u64));
    for (name, stage) in [
        ("panes", Stage::Panes),
        ("panes+reduce", Stage::Reduce),
        ("windows(all)", Stage::Windows),
    ] {
        group.bench_function(name, |b| {
            b.iter_batched(|| input.clone(), |i| run_stage(i, stage), BatchSize::LargeInput)
        });
    }
    group.finish();
}

fn ml(c: &mut Criterion) {
    let models = load_latest(std::path::Path::new("models")).expect("committed models in models/");
    // One station's state after 30 h of 1-minute windows: a full history.
    let mut state = StationState::new(&models);
    let loc = Location {
        latitude: Some(52.5),
        longitude: Some(13.4),
    };
    let start = 1_763_596_800_000u64; // 2025-11-20T00:00Z
    let obs = |i: u64| Obs {
        ts_ms: start + i * 60_000,
        values: [
            10.0 + ((i as f32) / 240.0).sin() * 5.0,
            70.0,
            1013.0 + ((i as f32) / 600.0).cos(),
            3.0,
        ],
    };
    for i in 0..30 * 60 {
        state.step(obs(i), loc, &models);
    }
    let mut group = c.benchmark_group("ml");
    group.throughput(Throughput::Elements(1));
    group.bench_function("features", |b| {
        b.iter(|| black_box(features::build(black_box(state.history()), loc)))
    });
    let built = features::build(state.history(), loc).expect("a full history builds features");
    let mut forecaster = StationForecaster::new(&models.forecast.model);
    group.bench_function("forecast_1h_6h_24h", |b| {
        b.iter(|| {
            let f = forecaster.forecast(black_box(&built), start, &models.forecast.model);
            forecaster.clear_pending();
            black_box(f)
        })
    });
    let mut i = 30 * 60;
    group.bench_function("station_step(all)", |b| {
        b.iter_batched(
            || state.clone(),
            |mut s| {
                i += 1;
                black_box(s.step(obs(i), loc, &models))
            },
            BatchSize::SmallInput,
        )
    });
    let forest = &models.anomaly.model.forest;
    let mut rng = weatherflow::ml::forest::SplitMix64::new(1);
    let rows: Vec<[f32; 7]> = (0..10_000)
        .map(|_| std::array::from_fn(|_| (rng.next_f64() as f32 - 0.5) * 2.0))
        .collect();
    let mut scores = vec![0.0; rows.len()];
    group.throughput(Throughput::Elements(rows.len() as u64));
    group.bench_function("forest_score_batch", |b| {
        b.iter(|| forest.score_batch(black_box(&rows), &mut scores))
    });
    group.bench_function("forest_score_one_by_one", |b| {
        b.iter(|| rows.iter().map(|r| forest.score(black_box(r))).sum::<f32>())
    });
    group.finish();
}

fn serialisation(c: &mut Criterion) {
    let models = load_latest(std::path::Path::new("models")).expect("committed models in models/");
    let (features, predictions) = outputs(readings(&lines(10)), models);
    let mut group = c.benchmark_group("json_out");
    let mut buf = Vec::with_capacity(1 << 20);
    group.throughput(Throughput::Elements(features.len() as u64));
    // The sink formats a window end's two bounds once for all its stations; so does this.
    let bounds: std::collections::HashMap<u64, (String, String)> = features
        .iter()
        .map(|w| {
            (
                w.window_end,
                (format_rfc3339(w.window_start), format_rfc3339(w.window_end)),
            )
        })
        .collect();
    group.bench_function("window_features", |b| {
        b.iter(|| {
            buf.clear();
            for w in &features {
                let (start, end) = &bounds[&w.window_end];
                w.write_json(&mut buf, start, end).expect("into a Vec");
                buf.push(b'\n');
            }
            black_box(buf.len())
        })
    });
    group.throughput(Throughput::Elements(predictions.len() as u64));
    group.bench_function("prediction", |b| {
        b.iter(|| {
            buf.clear();
            for p in &predictions {
                serde_json::to_writer(&mut buf, p).expect("into a Vec");
                buf.push(b'\n');
            }
            black_box(buf.len())
        })
    });
    group.finish();
}

criterion_group!(benches, parsing, dataflow, ml, serialisation);
criterion_main!(benches);
