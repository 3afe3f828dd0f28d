//! Peak RSS of the window graph cut after each stage, for many stations: where the
//! per-station memory of BENCHMARKS.md "Memory per station" goes.
//!
//! `cargo run --release --example memory_stages -- panes|reduce|windows STATIONS MINUTES`
//!
//! Readings (every station every 10 s) are built in memory first; the figure that matters
//! is the peak minus the RSS after building them. One worker; the input is fed a minute at
//! a time, never more than a minute ahead of the output, so little is in flight.
use std::sync::Arc;
use timely::dataflow::operators::Probe;
use timely::dataflow::{InputHandleVec, ProbeHandle};
use weatherflow::dataflow::{pane, window_stats, windows};
use weatherflow::metrics::Metrics;
use weatherflow::schema::{Reading, floor_minute, parse_json};

fn hwm() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let l = s.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    l[6..].trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() / 1024
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let stage = args[1].clone();
    let stations: u64 = args[2].parse().unwrap();
    let minutes: u64 = args[3].parse().unwrap();
    // Every station every 10 s; the values only need to be valid.
    let mut input = Vec::new();
    let t0 = 1_763_596_800_000u64;
    for step in 0..minutes * 6 {
        for s in 0..stations {
            let line = format!(
                r#"{{"station_id":"st-{s:06}","timestamp":{},"temperature":{}.5,"humidity":50.0,"pressure":1000.0,"wind_speed":3.0}}"#,
                t0 + step * 10_000 + s % 1000,
                (s + step) % 30
            );
            input.push(parse_json(line.as_bytes(), input.len() as u64).unwrap());
        }
    }
    let base = hwm();
    eprintln!("input {} readings, hwm after input {} MB", input.len(), base);
    let n = input.len();
    timely::execute_directly(move |worker| {
        let mut handle = InputHandleVec::<u64, Reading>::new();
        let probe = ProbeHandle::new();
        worker.dataflow::<u64, _, _>(|scope| {
            let stream = handle.to_stream(scope);
            let metrics = Arc::new(Metrics::new(1));
            match stage.as_str() {
                "panes" => {
                    pane::build_panes(stream, Default::default(), metrics)
                        .0
                        .inner
                        .probe_with(&probe);
                }
                "reduce" => {
                    window_stats(pane::build_panes(stream, Default::default(), metrics).0)
                        .stream
                        .probe_with(&probe);
                }
                _ => {
                    windows(stream, metrics, weatherflow::dataflow::StationLimits::unbounded())
                        .features
                        .probe_with(&probe);
                }
            }
        });
        for r in input {
            let minute = floor_minute(r.timestamp_ms);
            if minute > *handle.time() {
                handle.advance_to(minute);
                while probe.less_than(&minute.saturating_sub(60_000)) {
                    worker.step();
                }
            }
            handle.send(r);
        }
        handle.close();
        while !probe.done() {
            worker.step();
        }
    });
    eprintln!("{n} readings; peak {} MB, of which after input {} MB", hwm(), base);
}
