//! The one feature builder: training, `evaluate` and the dataflow operator all call
//! [`build`] on a [`History`], so the model never sees different features offline and
//! online.
//!
//! Temperature enters as *differences from the current value* (lags, 24 h statistics),
//! because the model predicts the change and differences carry over from one climate to
//! another far better than levels do. The diurnal cycle enters as sine/cosine of local
//! solar time, and also multiplied by the last 24 h range, so that one pooled linear model
//! can express "a station with a large daily swing warms faster in the morning".
//!
//! A missing input is imputed as "no change" (0 for a difference, 0 for a centred
//! variable), which is the right neutral value for a model of change. Without 24 h of
//! history the [`Variant::Short`] mask zeroes every feature that needs it, and the short
//! model, trained on the same masked vectors, is used instead.

use serde::{Deserialize, Serialize};

use super::history::{HOUR_MS, HUMIDITY, History, PRESSURE, TEMPERATURE, WIND};

/// Number of features.
pub const N_FEATURES: usize = 35;

/// Feature names, in vector order (written to model metadata).
pub const NAMES: [&str; N_FEATURES] = [
    "bias",
    "t_minus_lag1h",
    "t_minus_lag2h",
    "t_minus_lag3h",
    "t_minus_lag4h",
    "t_minus_lag5h",
    "t_minus_lag6h",
    "t_minus_lag24h",
    "lag23h_minus_lag24h",
    "lag18h_minus_lag24h",
    "mean24h_minus_t",
    "max24h_minus_t",
    "min24h_minus_t",
    "std24h",
    "sin_hour",
    "cos_hour",
    "sin_2hour",
    "cos_2hour",
    "range24h_sin_hour",
    "range24h_cos_hour",
    "range24h_sin_2hour",
    "range24h_cos_2hour",
    "sin_doy",
    "cos_doy",
    "humidity_centred",
    "humidity_change_1h",
    "pressure_tendency_3h",
    "wind_speed",
    "dewpoint_depression",
    "clear_sky_sun_now",
    "clear_sky_sun_change_1h",
    "clear_sky_sun_change_6h",
    "range24h_sun_change_1h",
    "range24h_sun_change_6h",
    "range24h_sun_now",
];

/// Features only the full variant has: they need 24 h of history.
const NEEDS_DAY: [usize; 18] = [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 18, 19, 20, 21, 28, 32, 33, 34];

/// Which model serves a forecast.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// At least 24 h of history: every feature is available.
    Full,
    /// Less than 24 h of history: day-scale features are masked.
    Short,
}

impl Variant {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Full => "full",
            Variant::Short => "short_history",
        }
    }
}

/// A built feature vector and the values a forecast is expressed against.
#[derive(Clone, Debug)]
pub struct Features {
    /// The vector, in [`NAMES`] order.
    pub x: [f32; N_FEATURES],
    /// Which variant these features serve.
    pub variant: Variant,
    /// The current temperature: forecasts are `t0 + predicted change`.
    pub t0: f32,
    /// Local solar hour angle, radians (0 = solar midnight).
    pub hour_angle: f32,
    /// Temperature range over the last 24 h (0 when unknown).
    pub range24: f32,
}

/// Where a station is, when known (from the data or the station catalogue).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Location {
    /// Degrees north.
    pub latitude: Option<f64>,
    /// Degrees east.
    pub longitude: Option<f64>,
}

/// Sine of the sun's elevation at `ts_ms`, floored at 0 (night): the shape of clear-sky
/// heating. It carries what a few harmonics of the hour cannot: sunrise and sunset move
/// with season and latitude, and heating follows them. 0 without a latitude.
pub fn clear_sky_sun(ts_ms: u64, loc: Location) -> f32 {
    let Some(lat) = loc.latitude else { return 0.0 };
    let year_angle = f64::from(day_angle(ts_ms));
    // Declination (Cooper): 23.44° · sin(2π (284 + n) / 365), with n counted from 1 Jan.
    let declination = 23.44f64.to_radians() * (year_angle + (284.0 - 1.0) / 365.2425 * std::f64::consts::TAU).sin();
    let hour = f64::from(hour_angle(ts_ms, loc.longitude)) - std::f64::consts::PI;
    let lat = lat.to_radians();
    let sin_elevation = lat.sin() * declination.sin() + lat.cos() * declination.cos() * hour.cos();
    sin_elevation.max(0.0) as f32
}

/// Dew point (°C) by the Magnus formula; NaN in, NaN out.
pub fn dewpoint(t: f32, rh: f32) -> f32 {
    const A: f32 = 17.625;
    const B: f32 = 243.04;
    let g = (rh.clamp(1.0, 100.0) / 100.0).ln() + A * t / (B + t);
    B * g / (A - g)
}

/// Local solar hour angle in radians: UTC time of day shifted by longitude / 15 h. Without
/// a longitude the UTC hour is used, which only shifts the phase the model sees.
pub fn hour_angle(ts_ms: u64, longitude: Option<f64>) -> f32 {
    let day_ms = 24 * HOUR_MS;
    let utc_hours = (ts_ms % day_ms) as f64 / HOUR_MS as f64;
    let solar = (utc_hours + longitude.unwrap_or(0.0) / 15.0).rem_euclid(24.0);
    (solar / 24.0 * std::f64::consts::TAU) as f32
}

fn day_angle(ts_ms: u64) -> f32 {
    let day = (ts_ms / (24 * HOUR_MS)) as f64;
    // Day of year without calendars: the phase of a 365.2425-day year since the epoch.
    ((day / 365.2425).fract() * std::f64::consts::TAU) as f32
}

/// A missing (non-finite) input becomes 0: "no change" for a difference, the centre for a
/// centred variable.
pub(crate) fn or_zero(v: f32) -> f32 {
    if v.is_finite() { v } else { 0.0 }
}

/// The features a day-ahead model uses. The target is the same hour tomorrow, so the
/// diurnal terms cancel; what remains is persistence of the last day's change, reversion
/// to the day's mean, season, and the weather signals of humidity and pressure. Fewer
/// inputs transfer better to unseen stations here.
pub const DAY_AHEAD: [usize; 9] = [0, 7, 10, 13, 22, 23, 24, 26, 28];

/// Zeroes the features that need a day of history: the short variant's view of `x`.
pub fn mask_short(x: &mut [f32; N_FEATURES]) {
    for i in NEEDS_DAY {
        x[i] = 0.0;
    }
}

/// Builds the features at the latest observation; `None` before any temperature.
pub fn build(h: &History, loc: Location) -> Option<Features> {
    let latest = h.latest()?;
    let t0 = latest.get(TEMPERATURE)?;
    let lag = |k: usize| h.hour_mean(k, TEMPERATURE);
    let mut x = [0.0f32; N_FEATURES];
    x[0] = 1.0;
    for (k, slot) in x.iter_mut().enumerate().take(7).skip(1) {
        *slot = or_zero(t0 - lag(k));
    }
    let lag24 = lag(24);
    x[7] = or_zero(t0 - lag24);
    x[8] = or_zero(lag(23) - lag24);
    x[9] = or_zero(lag(18) - lag24);
    // 24 h statistics over the current hour and the 23 before it.
    let (mut n, mut sum, mut sq, mut lo, mut hi) = (0u32, 0.0f32, 0.0f32, f32::INFINITY, f32::NEG_INFINITY);
    for k in 0..24 {
        let v = lag(k);
        if v.is_finite() {
            n += 1;
            sum += v;
            sq += v * v;
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    let mut range24 = 0.0;
    if n >= 2 {
        let mean = sum / n as f32;
        x[10] = mean - t0;
        x[11] = hi - t0;
        x[12] = lo - t0;
        x[13] = ((sq - n as f32 * mean * mean) / (n - 1) as f32).max(0.0).sqrt();
        range24 = hi - lo;
    }
    let angle = hour_angle(latest.ts_ms, loc.longitude);
    let (s1, c1) = angle.sin_cos();
    let (s2, c2) = (2.0 * angle).sin_cos();
    x[14] = s1;
    x[15] = c1;
    x[16] = s2;
    x[17] = c2;
    x[18] = range24 * s1;
    x[19] = range24 * c1;
    x[20] = range24 * s2;
    x[21] = range24 * c2;
    let (sd, cd) = day_angle(latest.ts_ms).sin_cos();
    x[22] = sd;
    x[23] = cd;
    let rh = latest.values[HUMIDITY];
    x[24] = or_zero((rh - 70.0) / 30.0);
    x[25] = or_zero((rh - h.hour_mean(1, HUMIDITY)) / 10.0);
    x[26] = or_zero(latest.values[PRESSURE] - h.hour_mean(3, PRESSURE));
    x[27] = or_zero(latest.values[WIND] / 5.0);
    x[28] = or_zero((t0 - dewpoint(t0, rh)) / 10.0);
    let sun = clear_sky_sun(latest.ts_ms, loc);
    let sun1 = clear_sky_sun(latest.ts_ms + HOUR_MS, loc) - sun;
    let sun6 = clear_sky_sun(latest.ts_ms + 6 * HOUR_MS, loc) - sun;
    x[29] = sun;
    x[30] = sun1;
    x[31] = sun6;
    x[32] = range24 * sun1;
    x[33] = range24 * sun6;
    x[34] = range24 * sun;
    let variant = if h.hours() >= 24.0 && lag24.is_finite() && n >= 12 {
        Variant::Full
    } else {
        mask_short(&mut x);
        range24 = 0.0;
        Variant::Short
    };
    Some(Features {
        x,
        variant,
        t0,
        hour_angle: angle,
        range24,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::history::Obs;

    #[test]
    fn short_then_full() {
        let mut h = History::default();
        for i in 0..30u64 {
            h.push(Obs {
                ts_ms: (1000 + i) * HOUR_MS,
                values: [i as f32, 60.0, f32::NAN, 3.0],
            });
            let f = build(
                &h,
                Location {
                    latitude: Some(36.0),
                    longitude: Some(-80.0),
                },
            )
            .unwrap();
            assert_eq!(f.variant == Variant::Full, i >= 24, "at hour {i}");
            assert!(f.x.iter().all(|v| v.is_finite()));
            if i >= 24 {
                assert_eq!(f.x[1], 1.0);
                assert_eq!(f.x[7], 24.0);
                assert_eq!(f.x[26], 0.0, "no pressure: neutral tendency");
            } else {
                assert_eq!(f.x[7], 0.0);
            }
        }
    }

    #[test]
    fn solar_time_follows_longitude() {
        // 12:00 UTC at 90° W is 06:00 local solar time: a quarter turn.
        let noon = 12 * HOUR_MS;
        let a = hour_angle(noon, Some(-90.0));
        assert!((a - std::f32::consts::FRAC_PI_2).abs() < 1e-5);
        assert!((dewpoint(20.0, 100.0) - 20.0).abs() < 0.01);
    }
}
