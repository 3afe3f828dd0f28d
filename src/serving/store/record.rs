//! The store's compact, allocation-free forms of the wire records.
//!
//! A day of history is 1,440 windows and 1,440 predictions per station, so a thousand
//! stations hold nearly three million records: how they are held decides both memory and
//! the writers' cost. The wire types carry a `String` station id per record, optional
//! floats as 16-byte `Option`s, and would each need an `Arc` to be shared with readers.
//! Here the station id lives once in the map key, a missing value is a NaN (every value
//! that reaches the store is finite: the parser rejects non-finite input and statistics
//! of finite values are finite), and records sit inline in the station's deque, so a
//! write is a copy into memory the deque already owns. Readers copy records out under
//! the lock and rebuild the wire type after releasing it.

use std::sync::Arc;

use crate::schema::{AnomalyRecord, ForecastRecord, ModelVersions, Prediction, Trend, VariableStats, WindowFeatures};

fn pack(v: Option<f64>) -> f64 {
    v.unwrap_or(f64::NAN)
}

fn unpack(v: f64) -> Option<f64> {
    (!v.is_nan()).then_some(v)
}

/// [`VariableStats`] with NaN for `null`; `count == 0` means the variable is absent.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Stats {
    count: u64,
    mean: f64,
    std: f64,
    min: f64,
    max: f64,
    slope_per_hour: f64,
}

impl Stats {
    const ABSENT: Stats = Stats {
        count: 0,
        mean: f64::NAN,
        std: f64::NAN,
        min: f64::NAN,
        max: f64::NAN,
        slope_per_hour: f64::NAN,
    };

    fn pack(s: &Option<VariableStats>) -> Stats {
        match s {
            // A present variable always has at least one reading, so count 0 is free.
            Some(s) if s.count > 0 => Stats {
                count: s.count,
                mean: s.mean,
                std: pack(s.std),
                min: s.min,
                max: s.max,
                slope_per_hour: pack(s.slope_per_hour),
            },
            _ => Stats::ABSENT,
        }
    }

    fn unpack(&self) -> Option<VariableStats> {
        (self.count > 0).then(|| VariableStats {
            count: self.count,
            mean: self.mean,
            std: unpack(self.std),
            min: self.min,
            max: self.max,
            slope_per_hour: unpack(self.slope_per_hour),
        })
    }
}

/// One window without its station id.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StoredFeatures {
    window_start: u64,
    window_end: u64,
    count: u64,
    vars: [Stats; 4],
    trend: [f64; 4],
}

impl StoredFeatures {
    /// Packs a window.
    pub fn pack(f: &WindowFeatures) -> Self {
        let t = &f.trend;
        StoredFeatures {
            window_start: f.window_start,
            window_end: f.window_end,
            count: f.count,
            vars: [&f.temperature, &f.humidity, &f.pressure, &f.wind_speed].map(Stats::pack),
            trend: [
                t.temperature_change_1m,
                t.humidity_change_1m,
                t.pressure_change_1m,
                t.wind_speed_change_1m,
            ]
            .map(pack),
        }
    }

    /// The window end, epoch ms.
    pub fn end(&self) -> u64 {
        self.window_end
    }

    /// The mean of variable `i` (temperature, humidity, pressure, wind speed).
    pub fn mean(&self, i: usize) -> Option<f64> {
        self.vars.get(i).filter(|s| s.count > 0).map(|s| s.mean)
    }

    /// The wire record.
    pub fn unpack(&self, station_id: &str) -> WindowFeatures {
        let [temperature, humidity, pressure, wind_speed] = self.vars.map(|s| s.unpack());
        let [t, h, p, w] = self.trend.map(unpack);
        WindowFeatures {
            station_id: station_id.to_owned(),
            window_start: self.window_start,
            window_end: self.window_end,
            count: self.count,
            temperature,
            humidity,
            pressure,
            wind_speed,
            trend: Trend {
                temperature_change_1m: t,
                humidity_change_1m: h,
                pressure_change_1m: p,
                wind_speed_change_1m: w,
            },
        }
    }
}

/// One prediction without its station id.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredPrediction {
    window_end: u64,
    temperature: f64,
    /// Per forecast: horizon hours, temperature, lower, upper.
    forecasts: [(u32, [f64; 3]); 3],
    short_history: bool,
    /// The variant name when it is neither `full` nor `short_history` (a newer writer).
    other_variant: Option<Box<str>>,
    score: f64,
    is_anomaly: bool,
    /// Usually empty: then it allocates nothing.
    reasons: Box<[Box<str>]>,
    /// Shared with every other prediction of the same models.
    models: (Arc<str>, Arc<str>),
}

impl StoredPrediction {
    /// Packs a prediction, moving out what it can: the model versions are `Arc`s shared
    /// by every prediction, and cloning them from two workers at once makes their reference
    /// counts a contended cache line.
    pub fn pack(p: Prediction) -> (String, Self) {
        let (short_history, other_variant) = match p.forecast_variant.as_str() {
            "full" => (false, None),
            "short_history" => (true, None),
            other => (false, Some(other.into())),
        };
        let stored = StoredPrediction {
            window_end: p.window_end,
            temperature: p.temperature,
            forecasts: p
                .forecasts
                .each_ref()
                .map(|f| (f.horizon_hours, [f.temperature, f.lower, f.upper])),
            short_history,
            other_variant,
            score: p.anomaly.score,
            is_anomaly: p.anomaly.is_anomaly,
            reasons: p.anomaly.reasons.into_iter().map(String::into_boxed_str).collect(),
            models: (p.models.forecast, p.models.anomaly),
        };
        (p.station_id, stored)
    }

    /// The window end, epoch ms.
    pub fn end(&self) -> u64 {
        self.window_end
    }

    /// The first (1 h) forecast's temperature.
    pub fn first_forecast(&self) -> f64 {
        self.forecasts[0].1[0]
    }

    /// The anomaly score and flag.
    pub fn anomaly(&self) -> (f64, bool) {
        (self.score, self.is_anomaly)
    }

    /// The wire record.
    pub fn unpack(&self, station_id: &str) -> Prediction {
        let variant = match (&self.other_variant, self.short_history) {
            (Some(other), _) => other.to_string(),
            (None, true) => "short_history".into(),
            (None, false) => "full".into(),
        };
        Prediction {
            station_id: station_id.to_owned(),
            window_end: self.window_end,
            temperature: self.temperature,
            forecasts: self.forecasts.map(|(h, [t, lo, hi])| ForecastRecord {
                horizon_hours: h,
                temperature: t,
                lower: lo,
                upper: hi,
            }),
            forecast_variant: variant,
            anomaly: AnomalyRecord {
                score: self.score,
                is_anomaly: self.is_anomaly,
                reasons: self.reasons.iter().map(|r| r.to_string()).collect(),
            },
            models: ModelVersions {
                forecast: self.models.0.clone(),
                anomaly: self.models.1.clone(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serving::store::tests::{prediction, window};

    #[test]
    fn records_round_trip_exactly() {
        let mut f = window("a", 1_795_176_060_000, 11.5);
        f.humidity = Some(VariableStats {
            count: 1,
            mean: 80.0,
            std: None,
            min: 80.0,
            max: 80.0,
            slope_per_hour: None,
        });
        f.trend.pressure_change_1m = Some(-0.25);
        assert_eq!(StoredFeatures::pack(&f).unpack("a"), f);
        let mut p = prediction("a", 1_795_176_060_000, true);
        let round_trip = |p: &Prediction| {
            let (id, stored) = StoredPrediction::pack(p.clone());
            stored.unpack(&id)
        };
        assert_eq!(round_trip(&p), p);
        p.forecast_variant = "short_history".into();
        assert_eq!(round_trip(&p), p);
        p.forecast_variant = "experimental".into();
        assert_eq!(round_trip(&p), p);
    }
}
