//! The incremental windows against a from-scratch batch recompute.
//!
//! Seeded random input with every awkward case the contract names: out-of-order readings
//! within the lateness, exact duplicates, duplicates that disagree (the first wins), late
//! readings beyond the lateness, invalid lines, missing variables, a station that falls
//! silent and returns, and a station with a single reading (std and slope null). The
//! oracle below shares no code with the pipeline: it walks the lines in order, applies
//! the watermark rule, deduplicates, and recomputes every window with two-pass `f64`
//! statistics.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use weatherflow::schema::{VariableStats, WindowFeatures};

use crate::common::{read_features, replay, sorted_lines};

pub const MINUTE: u64 = 60_000;
const LATENESS: u64 = 10_000;
pub const BASE: u64 = 1_795_132_800_000; // 2026-11-20T00:00:00Z

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

#[derive(Clone, Debug)]
pub struct Obs {
    pub station: String,
    pub t: u64,
    pub values: [Option<f64>; 4],
}

fn fmt_value(v: Option<f64>) -> String {
    v.map_or("null".into(), |v| format!("{v:.2}"))
}

fn to_json(o: &Obs) -> String {
    let ts = if o.t.is_multiple_of(3) {
        o.t.to_string()
    } else {
        let s = weatherflow::schema::format_rfc3339(o.t);
        format!("\"{s}\"")
    };
    let mut line = format!(
        r#"{{"station_id":"{}","timestamp":{ts},"temperature":{}"#,
        o.station,
        fmt_value(o.values[0])
    );
    if o.values[1].is_some() || o.t.is_multiple_of(2) {
        let _ = write!(line, r#","humidity":{}"#, fmt_value(o.values[1]));
    }
    if let Some(p) = o.values[2] {
        let _ = write!(line, r#","pressure":{p:.1}"#);
    }
    let _ = write!(line, r#","wind_speed":{}}}"#, fmt_value(o.values[3]));
    line
}

/// Produces the input lines, and for each the observation it carries (None = invalid).
pub fn generate(seed: u64) -> Vec<(String, Option<Obs>)> {
    let mut rng = Rng(seed);
    let stations = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "quiet"];
    let mut temps: Vec<f64> = (0..stations.len()).map(|i| 5.0 + i as f64).collect();
    let mut lines: Vec<(String, Option<Obs>)> = Vec::new();
    let mut clock = BASE + 20_000;
    let mut t_single_done = false;
    while clock < BASE + 45 * MINUTE {
        clock += rng.below(2_500);
        let s = rng.below(stations.len() as u64) as usize;
        // "quiet" falls silent between minutes 8 and 30.
        if stations[s] == "quiet" && (BASE + 8 * MINUTE..BASE + 30 * MINUTE).contains(&clock) {
            continue;
        }
        temps[s] += (rng.below(41) as f64 - 20.0) / 100.0;
        let mut t = clock - rng.below(8_000); // out of order, within the lateness
        if rng.percent(2) {
            t = clock.saturating_sub(15_000 + rng.below(10 * MINUTE)); // beyond the lateness
        }
        let obs = Obs {
            station: stations[s].to_string(),
            t,
            values: [
                Some((temps[s] * 100.0).round() / 100.0),
                (!rng.percent(10)).then(|| 40.0 + rng.below(5000) as f64 / 100.0),
                (!rng.percent(10)).then(|| 1000.0 + rng.below(300) as f64 / 10.0),
                (!rng.percent(5)).then(|| rng.below(1500) as f64 / 100.0),
            ],
        };
        lines.push((to_json(&obs), Some(obs.clone())));
        if rng.percent(3) && lines.len() > 20 {
            let copy = lines[lines.len() - 1 - rng.below(20) as usize].clone();
            lines.push(copy); // an exact duplicate delivery
        }
        if rng.percent(1) {
            let mut other = obs.clone();
            other.values[0] = other.values[0].map(|v| v + 1.5); // same key, other value
            lines.push((to_json(&other), Some(other)));
        }
        if rng.percent(1) {
            let bad = match rng.below(3) {
                0 => r#"{"station_id":"alpha","timestamp":"#.to_string(),
                1 => to_json(&Obs {
                    values: [Some(75.0), None, None, None],
                    ..obs.clone()
                }),
                _ => format!(r#"{{"station_id":"","timestamp":{},"temperature":1}}"#, obs.t),
            };
            lines.push((bad, None));
        }
        if !t_single_done && clock > BASE + 20 * MINUTE {
            t_single_done = true;
            let single = Obs {
                station: "single".into(),
                t: clock,
                values: [Some(-3.25), Some(99.0), None, Some(0.0)],
            };
            lines.push((to_json(&single), Some(single)));
        }
    }
    lines
}

pub struct Expected {
    pub windows: BTreeMap<(String, u64), WindowFeatures>,
    pub late: u64,
    pub invalid: u64,
    pub duplicates: u64,
}

fn stats(points: &[(u64, f64)]) -> Option<VariableStats> {
    if points.is_empty() {
        return None;
    }
    let n = points.len() as f64;
    let mean = points.iter().map(|p| p.1).sum::<f64>() / n;
    let min = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let max = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let std =
        (points.len() >= 2).then(|| (points.iter().map(|p| (p.1 - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt());
    let t0 = points[0].0;
    let hours: Vec<f64> = points.iter().map(|p| (p.0 as f64 - t0 as f64) / 3_600_000.0).collect();
    let xbar = hours.iter().sum::<f64>() / n;
    let sxx: f64 = hours.iter().map(|x| (x - xbar).powi(2)).sum();
    let sxy: f64 = hours.iter().zip(points).map(|(x, p)| (x - xbar) * (p.1 - mean)).sum();
    let slope_per_hour = (points.len() >= 2 && sxx > 0.0).then(|| sxy / sxx);
    Some(VariableStats {
        count: points.len() as u64,
        mean,
        std,
        min,
        max,
        slope_per_hour,
    })
}

/// The expected output of a serial replay: one watermark over all lines.
pub fn oracle(lines: &[(String, Option<Obs>)]) -> Expected {
    oracle_partitioned(lines, |_| 0)
}

/// The expected output when each station's readings travel in their own partition, as
/// with Kafka: lateness is judged against the partition's own latest event time.
pub fn oracle_partitioned(lines: &[(String, Option<Obs>)], partition_of: impl Fn(&Obs) -> usize) -> Expected {
    let mut max_seen: HashMap<usize, u64> = HashMap::new();
    let (mut late, mut invalid, mut duplicates) = (0, 0, 0);
    let mut seen = HashSet::new();
    let mut kept: Vec<Obs> = Vec::new();
    for (_, obs) in lines {
        let Some(obs) = obs else {
            invalid += 1;
            continue;
        };
        let max_seen = max_seen.entry(partition_of(obs)).or_insert(0);
        if obs.t < max_seen.saturating_sub(LATENESS) {
            late += 1;
            continue;
        }
        *max_seen = (*max_seen).max(obs.t);
        if !seen.insert((obs.station.clone(), obs.t)) {
            duplicates += 1;
            continue;
        }
        kept.push(obs.clone());
    }
    let mut ends = HashSet::new();
    for o in &kept {
        for k in 1..=5 {
            ends.insert((o.station.clone(), o.t - o.t % MINUTE + k * MINUTE));
        }
    }
    let mut windows = BTreeMap::new();
    for (station, end) in ends {
        let mut members: Vec<&Obs> = kept
            .iter()
            .filter(|o| o.station == station && o.t + 5 * MINUTE >= end && o.t < end)
            .collect();
        members.sort_by_key(|o| o.t);
        let series = |i: usize| {
            members
                .iter()
                .filter_map(|o| o.values[i].map(|v| (o.t, v)))
                .collect::<Vec<_>>()
        };
        let vars: Vec<Option<VariableStats>> = (0..4).map(|i| stats(&series(i))).collect();
        windows.insert(
            (station.clone(), end),
            WindowFeatures {
                station_id: station,
                window_start: end - 5 * MINUTE,
                window_end: end,
                count: members.len() as u64,
                temperature: vars[0].clone(),
                humidity: vars[1].clone(),
                pressure: vars[2].clone(),
                wind_speed: vars[3].clone(),
                trend: Default::default(),
            },
        );
    }
    let keys: Vec<(String, u64)> = windows.keys().cloned().collect();
    for (station, end) in keys {
        let Some(prev) = windows.get(&(station.clone(), end - MINUTE)).cloned() else {
            continue;
        };
        let now = windows.get_mut(&(station, end)).expect("present");
        let change = |a: &Option<VariableStats>, b: &Option<VariableStats>| Some(a.as_ref()?.mean - b.as_ref()?.mean);
        now.trend.temperature_change_1m = change(&now.temperature, &prev.temperature);
        now.trend.humidity_change_1m = change(&now.humidity, &prev.humidity);
        now.trend.pressure_change_1m = change(&now.pressure, &prev.pressure);
        now.trend.wind_speed_change_1m = change(&now.wind_speed, &prev.wind_speed);
    }
    Expected {
        windows,
        late,
        invalid,
        duplicates,
    }
}

fn close(what: &str, got: Option<f64>, want: Option<f64>, rel: f64) {
    match (got, want) {
        (None, None) => {}
        (Some(g), Some(w)) => assert!((g - w).abs() <= 1e-9 + rel * w.abs(), "{what}: got {g}, want {w}"),
        _ => panic!("{what}: got {got:?}, want {want:?}"),
    }
}

/// Asserts that `got` has exactly the expected windows, each with the expected values.
pub fn assert_windows(context: &str, got: &BTreeMap<(String, u64), WindowFeatures>, want: &Expected) {
    let missing: Vec<_> = want.windows.keys().filter(|k| !got.contains_key(*k)).take(5).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.windows.contains_key(*k)).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{context}: missing {missing:?}, extra {extra:?}"
    );
    for (key, w) in &want.windows {
        compare(&got[key], w);
    }
}

pub fn compare(got: &WindowFeatures, want: &WindowFeatures) {
    let id = format!(
        "{} @ {}",
        want.station_id,
        weatherflow::schema::format_rfc3339(want.window_end)
    );
    assert_eq!(got.count, want.count, "{id}: count");
    assert_eq!(got.window_start, want.window_start, "{id}: start");
    for (name, g, w) in [
        ("temperature", &got.temperature, &want.temperature),
        ("humidity", &got.humidity, &want.humidity),
        ("pressure", &got.pressure, &want.pressure),
        ("wind_speed", &got.wind_speed, &want.wind_speed),
    ] {
        match (g, w) {
            (None, None) => {}
            (Some(g), Some(w)) => {
                assert_eq!(g.count, w.count, "{id}: {name}.count");
                close(&format!("{id}: {name}.mean"), Some(g.mean), Some(w.mean), 1e-12);
                close(&format!("{id}: {name}.min"), Some(g.min), Some(w.min), 0.0);
                close(&format!("{id}: {name}.max"), Some(g.max), Some(w.max), 0.0);
                close(&format!("{id}: {name}.std"), g.std, w.std, 1e-7);
                close(&format!("{id}: {name}.slope"), g.slope_per_hour, w.slope_per_hour, 1e-6);
            }
            _ => panic!("{id}: {name}: got {g:?}, want {w:?}"),
        }
    }
    close(
        &format!("{id}: trend.temperature"),
        got.trend.temperature_change_1m,
        want.trend.temperature_change_1m,
        1e-9,
    );
    close(
        &format!("{id}: trend.humidity"),
        got.trend.humidity_change_1m,
        want.trend.humidity_change_1m,
        1e-9,
    );
    close(
        &format!("{id}: trend.pressure"),
        got.trend.pressure_change_1m,
        want.trend.pressure_change_1m,
        1e-9,
    );
    close(
        &format!("{id}: trend.wind_speed"),
        got.trend.wind_speed_change_1m,
        want.trend.wind_speed_change_1m,
        1e-9,
    );
}

#[test]
fn incremental_windows_match_a_batch_recompute_for_any_worker_count() {
    let dir = tempfile::tempdir().expect("temp dir");
    for seed in [0x5eed_u64, 0xdead_beef] {
        let lines = generate(seed);
        let input = dir.path().join(format!("raw-{seed}.jsonl"));
        let text: String = lines.iter().map(|(l, _)| format!("{l}\n")).collect();
        std::fs::write(&input, text).expect("write input");
        let want = oracle(&lines);
        assert!(
            want.late > 5 && want.duplicates > 5 && want.invalid > 3,
            "input exercises the edge cases"
        );
        assert!(
            want.windows
                .values()
                .any(|w| w.count == 1 && w.temperature.as_ref().is_some_and(|t| t.std.is_none()))
        );
        assert!(want.windows.contains_key(&("quiet".to_string(), BASE + 35 * MINUTE)));

        let mut outputs = Vec::new();
        for workers in ["1", "2", "4"] {
            let output = dir.path().join(format!("features-{seed}-{workers}.jsonl"));
            // Small chunks, so lateness must be decided across many chunk boundaries.
            let summary = replay(&input, &output, workers, &["--chunk-bytes", "4096"]);
            assert_eq!(summary.totals.late, want.late, "late readings with -w {workers}");
            assert_eq!(
                summary.totals.invalid_total(),
                want.invalid,
                "invalid readings with -w {workers}"
            );
            assert_eq!(
                summary.totals.duplicate, want.duplicates,
                "duplicates with -w {workers}"
            );
            let got = read_features(&output);
            assert_eq!(summary.totals.windows_emitted, got.len() as u64);
            let got: BTreeMap<(String, u64), WindowFeatures> = got
                .into_iter()
                .map(|w| ((w.station_id.clone(), w.window_end), w))
                .collect();
            assert_windows(&format!("-w {workers}"), &got, &want);
            outputs.push(sorted_lines(&output));
        }
        assert!(
            outputs.windows(2).all(|pair| pair[0] == pair[1]),
            "byte-identical output for -w 1, 2, 4"
        );
    }
}
