//! The built-in synthetic source: deterministic, realistic station weather.
//!
//! Each station has a fixed place on the globe drawn from the seed. Temperature follows a
//! diurnal cycle in the station's *local solar* time (longitude / 15 h from UTC), peaking
//! mid-afternoon; relative humidity moves against temperature; pressure and wind are
//! mean-reverting random walks. Rare faults are injected so the rest of the pipeline sees
//! what real stations send: spikes, stuck sensors, missing humidity, physically impossible
//! values (rejected by validation), duplicate deliveries and a very late re-delivery.
//!
//! Determinism: station `s` draws from its own random stream seeded by `(seed, s)`, and
//! stations are assigned to workers by `s mod peers` across all processes. The set of
//! readings therefore depends only on the flags, never on `-w`, `-n` or timing. Readings
//! are ordered by step `k` then station `s`; `--events N` keeps the first `N` of that order.

use std::io::{self, Write};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{Scope, StreamVec};

use super::give_by_minute;
use crate::metrics::SourceTally;
use crate::schema::{RawReading, Reading, floor_minute, format_rfc3339};
use crate::worker::WorkerContext;

/// Event-time pace of the generator.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Speed {
    /// As fast as the dataflow absorbs it.
    Max,
    /// Event seconds per wall second (`1` is real time, `60` a minute per second).
    Factor(f64),
}

/// The flag's spelling (`max` or the factor), so a child process gets the same pace.
impl std::fmt::Display for Speed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Speed::Max => f.write_str("max"),
            Speed::Factor(x) => write!(f, "{x}"),
        }
    }
}

/// Generator settings (see the CLI flags of the same names).
#[derive(Clone, Debug, PartialEq)]
pub struct GeneratorConfig {
    /// Number of stations.
    pub stations: u64,
    /// When given, station `i` is the catalogue's `i`-th: its id, and a climate from its
    /// latitude and elevation. Otherwise stations are synthetic (`st-00000`, …).
    pub catalogue: Option<std::sync::Arc<[crate::stations::Station]>>,
    /// Seed of every random stream.
    pub seed: u64,
    /// Event-time pace.
    pub speed: Speed,
    /// Stop after this many readings (over all workers); `None` runs until stopped.
    pub events: Option<u64>,
    /// Event time of the first step, epoch ms.
    pub start_ms: u64,
    /// Cadence of each station, ms.
    pub interval_ms: u64,
    /// Whether to inject faults (spikes, stuck sensors, bad values, duplicates, late
    /// re-deliveries). Off gives clean, strictly time-ordered readings.
    pub faults: bool,
}

/// SplitMix64: tiny, fast, and good enough for synthetic weather.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    /// Approximately standard normal (Irwin–Hall with 4 terms, rescaled).
    fn normal(&mut self) -> f64 {
        (self.unit() + self.unit() + self.unit() + self.unit() - 2.0) * 3f64.sqrt()
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.next_u64().is_multiple_of(one_in)
    }
}

fn round_to(v: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (v * f).round() / f
}

/// One station's fixed climate and evolving state.
#[derive(Clone, Debug)]
struct Station {
    id: String,
    index: u64,
    phase_ms: u64,
    longitude: f64,
    base_temp: f64,
    amplitude: f64,
    base_humidity: f64,
    base_pressure: f64,
    mean_wind: f64,
    pressure: f64,
    wind: f64,
    stuck: Option<(u32, f64)>,
    rng: Rng,
}

impl Station {
    fn new(cfg: &GeneratorConfig, index: u64) -> Station {
        let mut rng = Rng(cfg.seed ^ index.wrapping_mul(0xA076_1D64_78BD_642F));
        // The same draws with or without a catalogue, so synthetic runs stay as they were.
        let mut latitude = rng.range(-55.0, 70.0);
        let mut longitude = rng.range(-180.0, 180.0);
        let mut base_pressure = rng.range(1000.0, 1025.0);
        let mut id = None;
        let mut elevation = 0.0;
        if let Some(entry) = cfg.catalogue.as_ref().and_then(|c| c.get(index as usize)) {
            id = Some(entry.id.clone());
            (latitude, longitude, elevation) = (entry.latitude, entry.longitude, entry.elevation);
            // Barometric formula: surface pressure falls about 12 hPa per 100 m.
            base_pressure *= (1.0 - 2.255_77e-5 * elevation).max(0.3).powf(5.255_88);
        }
        let mean_wind = rng.range(1.0, 8.0);
        Station {
            id: id.unwrap_or_else(|| format!("st-{index:05}")),
            index,
            phase_ms: index * cfg.interval_ms / cfg.stations.max(1),
            longitude,
            // Warmer towards the equator, 6.5 °C colder per km of altitude.
            base_temp: 28.0 - 0.45 * latitude.abs() - 6.5 * elevation / 1000.0 + rng.range(-3.0, 3.0),
            amplitude: rng.range(2.5, 7.5),
            base_humidity: rng.range(55.0, 85.0),
            base_pressure,
            mean_wind,
            pressure: base_pressure,
            wind: mean_wind,
            stuck: None,
            rng,
        }
    }

    /// The readings of one step at `t`: usually one, sometimes a duplicate or a late
    /// re-delivery beside it. Values are rounded as real stations report them.
    fn step(&mut self, t: u64, cfg: &GeneratorConfig, out: &mut Vec<(u64, [Option<f64>; 4])>) {
        let faults = cfg.faults;
        let rng = &mut self.rng;
        let hours = t as f64 / 3_600_000.0 + self.longitude / 15.0;
        let solar = hours.rem_euclid(24.0);
        let cycle = (std::f64::consts::TAU * (solar - 15.0) / 24.0).cos();
        let mut temp = self.base_temp + self.amplitude * cycle + 0.15 * rng.normal();
        self.pressure += 0.03 * rng.normal() + 0.002 * (self.base_pressure - self.pressure);
        self.wind = (self.wind + 0.25 * rng.normal() + 0.03 * (self.mean_wind - self.wind)).max(0.0);
        let mut humidity = (self.base_humidity - 2.5 * (temp - self.base_temp) + 1.5 * rng.normal()).clamp(5.0, 100.0);

        match self.stuck.as_mut() {
            Some((left, value)) => {
                temp = *value;
                *left -= 1;
                if *left == 0 {
                    self.stuck = None;
                }
            }
            None if faults && rng.chance(20_000) => self.stuck = Some((30, round_to(temp, 2))),
            None => {}
        }
        if faults && rng.chance(5_000) {
            temp += if rng.chance(2) { 12.0 } else { -12.0 };
        }
        if faults && rng.chance(10_000) {
            humidity = 140.0; // a broken sensor; validation rejects it as out_of_range
        }
        let humidity = (!(faults && rng.chance(2_000))).then(|| round_to(humidity, 1));
        let values = [
            Some(round_to(temp, 2)),
            humidity,
            Some(round_to(self.pressure, 1)),
            Some(round_to(self.wind, 2)),
        ];
        out.push((t, values));
        if faults && rng.chance(1_000) {
            out.push((t, values));
        }
        if faults && t >= cfg.start_ms + 2 * 3_600_000 + 60_000 && rng.chance(20_000) {
            out.push((t - 2 * 3_600_000, values));
        }
    }
}

fn json_value(out: &mut Vec<u8>, value: Option<f64>, decimals: usize) {
    match value {
        Some(v) => {
            let _ = write!(out, "{v:.decimals$}");
        }
        None => out.extend_from_slice(b"null"),
    }
}

/// Calls `each` with every generated reading as a weather-raw JSON line (no newline) and
/// its station id. Each line carries `seq`, the station's reading number from 0 (an extra
/// field that the pipeline ignores, docs/design.md §3), in (step, station) order: event time never decreases unless late
/// re-deliveries are injected. Stops early when `each` breaks. Returns the lines produced.
pub fn for_each_line(cfg: &GeneratorConfig, mut each: impl FnMut(&str, &[u8]) -> ControlFlow<()>) -> u64 {
    let mut stations: Vec<Station> = (0..cfg.stations).map(|s| Station::new(cfg, s)).collect();
    let mut scratch = Vec::new();
    let mut line = Vec::with_capacity(256);
    let mut produced = 0u64;
    for step in 0.. {
        for st in &mut stations {
            if cfg.events.is_some_and(|n| step * cfg.stations + st.index >= n) {
                return produced;
            }
            scratch.clear();
            st.step(cfg.start_ms + step * cfg.interval_ms + st.phase_ms, cfg, &mut scratch);
            for (t, values) in &scratch {
                line.clear();
                let _ = write!(
                    line,
                    r#"{{"station_id":"{}","timestamp":"{}","temperature":"#,
                    st.id,
                    format_rfc3339(*t)
                );
                json_value(&mut line, values[0], 2);
                line.extend_from_slice(br#","humidity":"#);
                json_value(&mut line, values[1], 1);
                line.extend_from_slice(br#","pressure":"#);
                json_value(&mut line, values[2], 1);
                line.extend_from_slice(br#","wind_speed":"#);
                json_value(&mut line, values[3], 2);
                // The station's own reading number: re-deliveries repeat it, and a reader
                // of weather-raw can prove nothing in between was lost (a gap).
                let number = t.saturating_sub(cfg.start_ms + st.phase_ms) / cfg.interval_ms;
                let _ = write!(line, r#","seq":{number}}}"#);
                produced += 1;
                if each(&st.id, &line).is_break() {
                    return produced;
                }
            }
        }
    }
    produced
}

/// Writes the generator's readings as weather-raw JSON lines (see [`for_each_line`]).
/// `progress` is called every million lines with the count so far. Returns the number of
/// lines written.
pub fn write_jsonl(cfg: &GeneratorConfig, out: &mut impl Write, mut progress: impl FnMut(u64)) -> io::Result<u64> {
    let mut result = Ok(());
    let mut written = 0u64;
    for_each_line(cfg, |_, line| {
        result = out.write_all(line).and_then(|()| out.write_all(b"\n"));
        if result.is_err() {
            return ControlFlow::Break(());
        }
        written += 1;
        if written.is_multiple_of(1_000_000) {
            progress(written);
        }
        ControlFlow::Continue(())
    });
    result.map(|()| written)
}

/// The generator as a timely source on the current worker.
pub fn generator<'s>(scope: Scope<'s, u64>, cfg: GeneratorConfig, ctx: WorkerContext) -> StreamVec<'s, u64, Reading> {
    let (index, peers) = (scope.index() as u64, scope.peers() as u64);
    source(scope, "Generator", move |cap, info| {
        let activator = scope.activator_for(info.address);
        let mut stations: Vec<Station> = (index..cfg.stations)
            .step_by(peers as usize)
            .map(|s| Station::new(&cfg, s))
            .collect();
        let lateness = ctx.lateness_ms;
        let watermark0 = cfg.start_ms.saturating_sub(lateness);
        let mut cap = (!stations.is_empty()).then(|| {
            let mut c = cap;
            c.downgrade(&floor_minute(watermark0));
            c
        });
        if cap.is_none() {
            ctx.metrics.set_watermark(ctx.local_index, u64::MAX);
        }
        let mut step: u64 = 0;
        let mut max_seen = 0u64;
        let mut watermark = watermark0;
        let started = Instant::now();
        let mut scratch = Vec::new();
        let mut batch: Vec<Reading> = Vec::new();
        move |output| {
            let Some(held) = cap.as_mut() else { return };
            if ctx.stopping() {
                // Stop requested: read nothing more, so the sinks can drain.
                return;
            }
            let mut tally = SourceTally::default();
            let target = match cfg.speed {
                Speed::Max => u64::MAX,
                Speed::Factor(f) => cfg.start_ms + (started.elapsed().as_secs_f64() * f * 1000.0) as u64,
            };
            let mut budget = 100_000usize;
            let mut finished = false;
            while budget > 0 {
                let step_start = cfg.start_ms + step * cfg.interval_ms;
                if step_start > target || !ctx.may_send(step_start) {
                    break;
                }
                if cfg.events.is_some_and(|n| step * cfg.stations >= n) {
                    finished = true;
                    break;
                }
                for st in &mut stations {
                    if cfg.events.is_some_and(|n| step * cfg.stations + st.index >= n) {
                        break;
                    }
                    let t = step_start + st.phase_ms;
                    scratch.clear();
                    st.step(t, &cfg, &mut scratch);
                    for (i, (ts, values)) in scratch.iter().enumerate() {
                        budget = budget.saturating_sub(1);
                        if *ts < watermark.max(max_seen.saturating_sub(lateness)) {
                            tally.late += 1;
                            continue;
                        }
                        max_seen = max_seen.max(*ts);
                        let seq = ((step * cfg.stations + st.index) << 2) | i as u64;
                        match (RawReading {
                            station_id: &st.id,
                            timestamp_ms: *ts,
                            values: *values,
                        })
                        .validate(seq)
                        {
                            Ok(r) => batch.push(r),
                            Err(e) => tally.reject(e.reason),
                        }
                    }
                }
                step += 1;
            }
            tally.accepted = batch.len() as u64;
            // Readings arrive in time order, so runs of one minute share a session.
            give_by_minute(output, held, &mut batch);
            tally.flush(&ctx.metrics);
            if finished {
                cap = None;
                ctx.metrics.set_watermark(ctx.local_index, u64::MAX);
                return;
            }
            // Nothing older than the event clock can still come, so the watermark follows
            // it even between readings (docs/design.md §4, idle partitions).
            let clock = match cfg.speed {
                Speed::Max => max_seen,
                Speed::Factor(_) => max_seen.max(target.min(cfg.start_ms + step * cfg.interval_ms)),
            };
            watermark = watermark.max(clock.saturating_sub(lateness));
            held.downgrade(&floor_minute(watermark).max(*held.time()));
            ctx.metrics.set_watermark(ctx.local_index, watermark);
            match cfg.speed {
                Speed::Max => activator.activate(),
                Speed::Factor(f) => {
                    let next = cfg.start_ms + step * cfg.interval_ms;
                    let wait_ms = (next.saturating_sub(target) as f64 / f).clamp(1.0, 100.0);
                    activator.activate_after(Duration::from_millis(wait_ms as u64));
                }
            }
        }
    })
}
