//! The compact per-station history every ML feature is built from.
//!
//! Both paths feed it the same way: training and `evaluate` push one hourly CSV row at a
//! time, the dataflow operator pushes each closed window's means at its window end. It
//! keeps what docs/design.md §5 asks for and nothing more:
//!
//! - hourly means of the four variables for the current and the last 25 hours, so lags
//!   1–6 h and 24 h and the 24 h statistics exist;
//! - temperature minute values for the last hour, so the live detectors can see a jump
//!   within a minute;
//! - the latest observation.
//!
//! That is 26 × 4 + 60 floats plus a few scalars: under 1 KiB per station, whatever the
//! stream's rate. Missing values are NaN, so a station without a pressure sensor simply
//! has NaN pressure everywhere and the feature builder treats it as missing.

use serde::{Deserialize, Serialize};

/// One hour in milliseconds.
pub const HOUR_MS: u64 = 3_600_000;
const MINUTE_MS: u64 = 60_000;
/// Hour buckets kept: the current one and 25 completed ones.
pub const HOURS: usize = 26;
const MINUTES: usize = 60;

/// Variable indices into [`Obs::values`] (the order of [`crate::schema::Var`]).
pub const TEMPERATURE: usize = 0;
/// Relative humidity, %.
pub const HUMIDITY: usize = 1;
/// Station pressure, hPa.
pub const PRESSURE: usize = 2;
/// Wind speed, m/s.
pub const WIND: usize = 3;

/// One observation: a CSV row, or a window's means at its end.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Obs {
    /// Observation time, epoch ms.
    pub ts_ms: u64,
    /// Temperature °C, humidity %, pressure hPa, wind m/s; NaN when missing.
    pub values: [f32; 4],
}

impl Obs {
    /// The value of variable `var`, or `None` when missing.
    pub fn get(&self, var: usize) -> Option<f32> {
        self.values.get(var).copied().filter(|v| v.is_finite())
    }
}

/// The history of one station. See the module docs for what it holds and why.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct History {
    /// Hour index (`ts / HOUR_MS`) of the current bucket; meaningful once `latest` is set.
    hour: u64,
    /// Sums and counts of the current hour.
    acc: [(f32, u16); 4],
    /// Completed hourly means, newest first: `hourly[k - 1]` is the hour `k` hours ago.
    /// Kept in order (shifted once an hour) so the per-window reads need no modulo, and
    /// slots before the stretch began are NaN by construction.
    hourly: [[f32; 4]; HOURS],
    /// Temperature by minute, at `minute_index % MINUTES`.
    minutes: Vec<f32>,
    /// Minute index of the latest observation.
    minute: u64,
    /// The latest observation.
    latest: Option<Obs>,
    /// Time of the first observation of the current unbroken stretch.
    start_ms: u64,
    /// Median dew point of the last 6 completed hours (NaN with fewer than 3), refreshed
    /// when an hour closes rather than recomputed for every window.
    dewpoint_median6: f32,
    /// Dew point of the latest observation, computed once at push.
    latest_dewpoint: f32,
}

impl Default for History {
    fn default() -> Self {
        History {
            hour: 0,
            acc: [(0.0, 0); 4],
            hourly: [[f32::NAN; 4]; HOURS],
            minutes: vec![f32::NAN; MINUTES],
            minute: 0,
            latest: None,
            start_ms: 0,
            dewpoint_median6: f32::NAN,
            latest_dewpoint: f32::NAN,
        }
    }
}

impl History {
    /// Forgets everything: a new stretch starts (a segment boundary, or a long gap).
    pub fn reset(&mut self) {
        *self = History::default();
    }

    /// Adds an observation. Observations must come in time order; an older one than the
    /// latest is ignored and `false` returned. A gap longer than the kept hours starts a
    /// new stretch, because no lag could reach across it.
    pub fn push(&mut self, obs: Obs) -> bool {
        let hour = obs.ts_ms / HOUR_MS;
        if let Some(latest) = self.latest {
            if obs.ts_ms < latest.ts_ms {
                return false;
            }
            if hour >= self.hour + HOURS as u64 {
                self.reset();
            }
        }
        if self.latest.is_none() {
            self.hour = hour;
            self.start_ms = obs.ts_ms;
            self.minute = obs.ts_ms / MINUTE_MS;
        }
        while self.hour < hour {
            self.close_hour();
        }
        for (acc, v) in self.acc.iter_mut().zip(obs.values) {
            if v.is_finite() {
                acc.0 += v;
                acc.1 = acc.1.saturating_add(1);
            }
        }
        let minute = obs.ts_ms / MINUTE_MS;
        // Minutes skipped since the latest observation hold no value.
        let skipped = minute.saturating_sub(self.minute).min(MINUTES as u64);
        for m in 1..skipped {
            self.minutes[((self.minute + m) % MINUTES as u64) as usize] = f32::NAN;
        }
        self.minute = minute;
        self.minutes[(minute % MINUTES as u64) as usize] = obs.values[TEMPERATURE];
        self.latest = Some(obs);
        self.latest_dewpoint = super::features::dewpoint(obs.values[TEMPERATURE], obs.values[HUMIDITY]);
        true
    }

    fn close_hour(&mut self) {
        self.hourly.copy_within(0..HOURS - 1, 1);
        for (out, acc) in self.hourly[0].iter_mut().zip(&mut self.acc) {
            *out = if acc.1 > 0 { acc.0 / f32::from(acc.1) } else { f32::NAN };
            *acc = (0.0, 0);
        }
        self.hour += 1;
        self.dewpoint_median6 = self.median_dewpoint(6);
    }

    /// Median dew point over the last `hours` completed hours; NaN with fewer than 3.
    fn median_dewpoint(&self, hours: usize) -> f32 {
        let mut v = [0.0f32; HOURS];
        let mut n = 0;
        for k in 1..=hours.min(HOURS - 1) {
            let d = super::features::dewpoint(self.hour_mean(k, TEMPERATURE), self.hour_mean(k, HUMIDITY));
            if d.is_finite() {
                v[n] = d;
                n += 1;
            }
        }
        if n < 3 {
            return f32::NAN;
        }
        let v = &mut v[..n];
        v.sort_by(f32::total_cmp);
        v[n / 2]
    }

    /// Dew point of the latest observation (NaN without humidity).
    pub fn latest_dewpoint(&self) -> f32 {
        self.latest_dewpoint
    }

    /// Median dew point of the last 6 completed hours (NaN with fewer than 3 of them).
    pub fn dewpoint_median6(&self) -> f32 {
        self.dewpoint_median6
    }

    /// The latest observation.
    pub fn latest(&self) -> Option<&Obs> {
        self.latest.as_ref()
    }

    /// Hours since the start of the current stretch.
    pub fn hours(&self) -> f32 {
        self.latest
            .map_or(0.0, |l| (l.ts_ms - self.start_ms) as f32 / HOUR_MS as f32)
    }

    /// The mean of `var` over the hour `k` hours before the current one (`k = 0` is the
    /// current, partial hour); NaN when missing or before the stretch began.
    pub fn hour_mean(&self, k: usize, var: usize) -> f32 {
        if self.latest.is_none() || k >= HOURS || var >= 4 {
            return f32::NAN;
        }
        if k == 0 {
            let (sum, n) = self.acc[var];
            return if n > 0 { sum / f32::from(n) } else { f32::NAN };
        }
        self.hourly[k - 1][var]
    }

    /// Temperature `m` minutes before the latest observation's minute (0 = that minute);
    /// NaN when not observed.
    pub fn minute_temperature(&self, m: usize) -> f32 {
        if self.latest.is_none() || m >= MINUTES || (m as u64) > self.minute {
            return f32::NAN;
        }
        let minute = self.minute - m as u64;
        if minute < self.start_ms / MINUTE_MS {
            return f32::NAN;
        }
        self.minutes[(minute % MINUTES as u64) as usize]
    }

    /// Approximate heap plus inline size, for the state budget.
    pub fn size_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.minutes.capacity() * std::mem::size_of::<f32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(hour: u64, t: f32) -> Obs {
        Obs {
            ts_ms: hour * HOUR_MS,
            values: [t, 50.0, f32::NAN, 2.0],
        }
    }

    #[test]
    fn hourly_lags_follow_the_rows() {
        let mut h = History::default();
        for i in 0..30 {
            assert!(h.push(obs(1000 + i, i as f32)));
        }
        assert_eq!(h.hour_mean(0, TEMPERATURE), 29.0);
        assert_eq!(h.hour_mean(1, TEMPERATURE), 28.0);
        assert_eq!(h.hour_mean(24, TEMPERATURE), 5.0);
        assert!(h.hour_mean(1, PRESSURE).is_nan());
        assert!(h.hour_mean(HOURS, TEMPERATURE).is_nan());
        assert_eq!(h.hours(), 29.0);
    }

    #[test]
    fn gaps_are_missing_and_long_gaps_restart() {
        let mut h = History::default();
        h.push(obs(10, 1.0));
        h.push(obs(13, 4.0));
        assert!(h.hour_mean(1, TEMPERATURE).is_nan());
        assert_eq!(h.hour_mean(3, TEMPERATURE), 1.0);
        assert!(h.hour_mean(4, TEMPERATURE).is_nan(), "before the stretch");
        h.push(obs(13 + HOURS as u64, 9.0));
        assert_eq!(h.hours(), 0.0);
        assert!(h.hour_mean(1, TEMPERATURE).is_nan());
        assert!(!h.push(obs(12, 0.0)), "out of order is refused");
    }

    #[test]
    fn minutes_average_into_the_hour() {
        let mut h = History::default();
        for m in 0..60 {
            h.push(Obs {
                ts_ms: 7 * HOUR_MS + m * MINUTE_MS,
                values: [m as f32, f32::NAN, f32::NAN, f32::NAN],
            });
        }
        h.push(obs(8, 100.0));
        assert_eq!(h.hour_mean(1, TEMPERATURE), 29.5);
        assert_eq!(h.minute_temperature(0), 100.0);
        assert_eq!(h.minute_temperature(1), 59.0);
        assert!(h.hour_mean(1, HUMIDITY).is_nan());
    }
}
