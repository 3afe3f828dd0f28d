//! Replays the real one-minute SURFRAD file and checks windows computed by hand.
//!
//! The first rows of `data/minute/surfrad_slv_co_1min.csv` (Alamosa, Colorado, 2016-01-01):
//!
//! | time  | temperature | humidity | pressure | wind |
//! |-------|-------------|----------|----------|------|
//! | 00:00 | −7.60       | 52.70    | 773.50   | 3.10 |
//! | 00:01 | −7.70       | 53.00    | 773.50   | 3.10 |
//! | 00:02 | −7.70       | 53.00    | 773.50   | 3.00 |
//! | 00:03 | −7.70       | 52.80    | 773.50   | 3.20 |
//! | 00:04 | −7.70       | 53.10    | 773.50   | 3.40 |
//! | 00:05 | −7.80       | 53.10    | 773.50   | 3.30 |
//!
//! Window [00:00, 00:05): temperature mean −38.4 / 5 = −7.68; deviations +0.08 and four
//! times −0.02, so Σd² = 0.0064 + 4 × 0.0004 = 0.008 and std = √(0.008 / 4) = √0.002.
//! Slope: x = 0..4 min (x̄ = 2), Σ(x−x̄)(y−ȳ) = −0.16 + 0.02 + 0 − 0.02 − 0.04 = −0.2,
//! Σ(x−x̄)² = 10, so −0.02 °C/min = −1.2 °C/h. Humidity mean 264.6 / 5 = 52.92; wind mean
//! 15.8 / 5 = 3.16; pressure constant, so std 0 and slope 0.
//! Window [00:01, 00:06): temperature mean −38.6 / 5 = −7.72, change −7.72 − (−7.68) = −0.04;
//! humidity mean 265.0 / 5 = 53.0, change +0.08.
//! Window [23:56, 00:01): only the 00:00 reading: std and slope null, no previous window.

use std::path::Path;

use weatherflow::schema::{WindowFeatures, parse_rfc3339};

use crate::common::{read_features, replay};

fn at<'a>(windows: &'a [WindowFeatures], end: &str) -> &'a WindowFeatures {
    let end = parse_rfc3339(end).expect("valid time");
    windows
        .iter()
        .find(|w| w.window_end == end)
        .unwrap_or_else(|| panic!("no window ending {end}"))
}

fn near(got: f64, want: f64) {
    assert!((got - want).abs() < 1e-9, "got {got}, want {want}");
}

#[test]
fn surfrad_minute_data_gives_the_hand_computed_windows() {
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/minute/surfrad_slv_co_1min.csv");
    let dir = tempfile::tempdir().expect("temp dir");
    let output = dir.path().join("features.jsonl");
    let summary = replay(&input, &output, "2", &[]);
    assert_eq!(summary.totals.records_in, 1440);
    assert_eq!(
        summary.totals.invalid_total() + summary.totals.late + summary.totals.duplicate,
        0
    );
    let windows = read_features(&output);
    // 1440 one-minute readings: window ends 00:01 .. 24:05 exclusive of the last minute.
    assert_eq!(windows.len(), 1444);

    let first = at(&windows, "2016-01-01T00:01:00Z");
    assert_eq!(first.count, 1);
    let t = first.temperature.as_ref().expect("temperature");
    assert_eq!((t.count, t.mean, t.std, t.slope_per_hour), (1, -7.6, None, None));
    assert_eq!(first.trend.temperature_change_1m, None);

    let second = at(&windows, "2016-01-01T00:02:00Z");
    near(second.trend.temperature_change_1m.expect("trend"), -0.05);

    let w = at(&windows, "2016-01-01T00:05:00Z");
    assert_eq!(w.count, 5);
    let t = w.temperature.as_ref().expect("temperature");
    near(t.mean, -7.68);
    near(t.std.expect("std"), 0.002f64.sqrt());
    assert_eq!((t.min, t.max), (-7.7, -7.6));
    near(t.slope_per_hour.expect("slope"), -1.2);
    near(w.humidity.as_ref().expect("humidity").mean, 52.92);
    near(w.wind_speed.as_ref().expect("wind").mean, 3.16);
    let p = w.pressure.as_ref().expect("pressure");
    assert_eq!((p.mean, p.std, p.slope_per_hour), (773.5, Some(0.0), Some(0.0)));

    let next = at(&windows, "2016-01-01T00:06:00Z");
    near(next.temperature.as_ref().expect("temperature").mean, -7.72);
    near(next.trend.temperature_change_1m.expect("trend"), -0.04);
    near(next.trend.humidity_change_1m.expect("trend"), 0.08);
}

#[test]
fn historical_csvs_with_a_missing_sensor_replay_together() {
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/historical/*.csv");
    let dir = tempfile::tempdir().expect("temp dir");
    let output = dir.path().join("features.jsonl");
    let summary = replay(&input, &output, "2", &[]);
    assert_eq!(summary.totals.records_in, 3 * 8760);
    let windows = read_features(&output);
    // Hourly data: each reading is alone in its five windows.
    assert_eq!(windows.len() as u64, 5 * summary.totals.records_in);
    assert!(
        windows
            .iter()
            .filter(|w| w.station_id == "sand_point_ak")
            .all(|w| w.pressure.is_none())
    );
    assert!(
        windows
            .iter()
            .filter(|w| w.station_id == "miami_fl")
            .all(|w| w.pressure.is_some())
    );
}
