//! Temperature forecasts at 1 h, 6 h and 24 h with 80 % intervals.
//!
//! Three layers, each cheap enough to run on every window:
//!
//! 1. **Pooled model** ([`ForecastModel`]): one linear model per horizon and variant,
//!    trained offline with smartcore's ridge regression on the *change* from the current
//!    temperature, pooled over the training stations.
//! 2. **Per-station correction** ([`StationForecaster`]): a recursive-least-squares
//!    learner per horizon on the pooled model's residuals ([`super::rls`]). Each hour one
//!    origin is remembered; when its target time arrives the station learns from what
//!    actually happened. Only data before a forecast's origin has been learned from, so
//!    offline evaluation of this loop is honestly prequential.
//! 3. **Adaptive interval**: the half-width is `k · scale`, where `scale` follows the
//!    station's recent absolute error and `k` is steered by adaptive conformal inference
//!    (raised after a miss, lowered after a hit) so that 80 % of verified intervals cover.
//!
//! Per-station state is bounded: three learners and at most 24 + 6 + 1 pending origins.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::MlError;
use super::features::{Features, N_FEATURES, Variant};
use super::history::HOUR_MS;
use super::rls::{DIM, Rls, RlsParams};

/// Forecast horizons, hours.
pub const HORIZONS: [u32; 3] = [1, 6, 24];

/// Target coverage of the interval.
pub const COVERAGE: f32 = 0.8;

/// A pending origin is verified by the first observation at most this late after its target.
const TARGET_SLACK_MS: u64 = 30 * 60_000;

/// The pooled model for one horizon.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HorizonModel {
    /// Horizon, hours.
    pub hours: u32,
    /// Weights of the full variant, in feature order.
    pub full: Vec<f32>,
    /// Weights of the short-history variant.
    pub short: Vec<f32>,
    /// Training MAE of the full variant: the starting interval scale.
    pub mae: f32,
    /// Starting interval multiplier: the 80 % quantile of |residual| / MAE in training.
    pub k80: f32,
    /// How much of the predicted change to publish (0 = persistence, 1 = all of it),
    /// chosen in training by leave-one-station-out among the training stations: at long
    /// horizons a pooled model can be worse than no change at all on a new station.
    #[serde(default = "one")]
    pub gain: f32,
}

fn one() -> f32 {
    1.0
}

/// Interval adaptation settings.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct IntervalParams {
    /// Step of the conformal multiplier update, in log space.
    pub step: f32,
    /// Rate at which the scale follows the recent absolute error.
    pub scale_rate: f32,
}

impl Default for IntervalParams {
    fn default() -> Self {
        IntervalParams {
            step: 0.05,
            scale_rate: 0.02,
        }
    }
}

/// The trained forecast model: what `models/forecast/<version>/model.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForecastModel {
    /// One model per horizon, in [`HORIZONS`] order.
    pub horizons: Vec<HorizonModel>,
    /// The per-station online learner.
    pub online: RlsParams,
    /// The interval adaptation.
    pub interval: IntervalParams,
    /// Learning rate of the per-station hour-of-day residual profile (0 disables it).
    pub profile_rate: f32,
    /// The online learner's error clip, in units of the station's error scale.
    pub clip: f32,
}

impl ForecastModel {
    /// Checks shapes, so a hand-edited or truncated file fails at load, not mid-stream.
    pub fn validate(&self) -> Result<(), MlError> {
        let hours: Vec<u32> = self.horizons.iter().map(|h| h.hours).collect();
        if hours != HORIZONS {
            return Err(MlError::Model(format!(
                "forecast horizons {hours:?}, expected {HORIZONS:?}"
            )));
        }
        for h in &self.horizons {
            let finite = |w: &[f32]| w.len() == N_FEATURES && w.iter().all(|v| v.is_finite());
            if !finite(&h.full)
                || !finite(&h.short)
                || !(0.0..=1.0).contains(&h.gain)
                || h.mae.is_nan()
                || h.mae <= 0.0
                || h.k80.is_nan()
                || h.k80 <= 0.0
            {
                return Err(MlError::Model(format!(
                    "forecast horizon {} h: need {N_FEATURES} finite weights per variant and positive mae/k80",
                    h.hours
                )));
            }
        }
        if !(self.online.forgetting > 0.0 && self.online.forgetting <= 1.0 && self.online.prior_var > 0.0) {
            return Err(MlError::Model("forecast online parameters out of range".into()));
        }
        Ok(())
    }
}

/// One forecast.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// Horizon, hours.
    pub horizon_hours: u32,
    /// Predicted temperature, °C.
    pub temperature: f32,
    /// Lower bound of the 80 % interval.
    pub lower: f32,
    /// Upper bound of the 80 % interval.
    pub upper: f32,
}

/// A forecast waiting for its target time.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Pending {
    origin_ms: u64,
    inputs: CorrectionInputs,
    /// The pooled model's predicted change.
    base: f32,
    /// The corrected predicted change that was published.
    change: f32,
    /// The RLS correction at the origin.
    correction: f32,
    /// Local solar hour slot (0..24) of the origin.
    slot: u8,
    /// The interval half-width that was published.
    half: f32,
    t0: f32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct HorizonState {
    rls: Rls,
    /// Mean residual by local solar hour of the origin: the station's own diurnal shape
    /// of errors, which a pooled linear model in a few harmonics cannot express.
    profile: Vec<f32>,
    scale: f32,
    k: f32,
    pending: VecDeque<Pending>,
}

/// What the station expected at an observation's time: the verified 1 h forecast.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Expectation {
    /// Forecast temperature.
    pub temperature: f32,
    /// The station's current 1 h error scale (about its MAE).
    pub scale: f32,
}

/// A verified forecast, as `evaluate` scores it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verified {
    /// Horizon, hours.
    pub hours: u32,
    /// When the forecast was made.
    pub origin_ms: u64,
    /// Temperature at the origin.
    pub t0: f32,
    /// Predicted temperature.
    pub predicted: f32,
    /// Observed temperature.
    pub actual: f32,
    /// Whether the 80 % interval covered it.
    pub covered: bool,
}

/// The online part of one station's forecaster.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StationForecaster {
    horizons: Vec<HorizonState>,
    last_origin_hour: Option<u64>,
}

/// The correction's inputs. A day ahead the diurnal cycle cancels (the target is the
/// same hour tomorrow), so the 24 h correction is only a bias and a gain on the pooled
/// change: more terms measurably added variance on unseen stations.
fn correction_input(inputs: &CorrectionInputs, base: f32, hours: u32) -> [f32; DIM] {
    if hours >= 24 {
        return [1.0, base, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
    }
    let (s1, c1) = inputs.hour_angle.sin_cos();
    let (s2, c2) = (2.0 * inputs.hour_angle).sin_cos();
    [1.0, base, s1, c1, s2, c2, inputs.change_1h, inputs.mean24_gap]
}

/// What the correction's input is built from: kept per pending forecast instead of the
/// eight-wide vector, which halves the pending state.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
struct CorrectionInputs {
    hour_angle: f32,
    change_1h: f32,
    mean24_gap: f32,
}

impl CorrectionInputs {
    fn of(f: &Features) -> Self {
        CorrectionInputs {
            hour_angle: f.hour_angle,
            change_1h: f.x[1],
            mean24_gap: f.x[10],
        }
    }
}

impl StationForecaster {
    /// A station at the prior: no correction, the model's training intervals.
    pub fn new(model: &ForecastModel) -> StationForecaster {
        StationForecaster {
            horizons: model
                .horizons
                .iter()
                .map(|h| HorizonState {
                    rls: Rls::new(&model.online),
                    profile: vec![0.0; 24],
                    scale: h.mae,
                    k: h.k80,
                    // One pending origin per hour of the horizon, plus the one at its target.
                    pending: VecDeque::with_capacity(h.hours as usize + 1),
                })
                .collect(),
            last_origin_hour: None,
        }
    }

    /// The 1 h forecast that targets `ts_ms`, if one is pending.
    pub fn expectation(&self, ts_ms: u64) -> Option<Expectation> {
        let h = self.horizons.first()?;
        let p = h
            .pending
            .iter()
            .find(|p| ts_ms >= p.origin_ms + HOUR_MS && ts_ms <= p.origin_ms + HOUR_MS + TARGET_SLACK_MS)?;
        Some(Expectation {
            temperature: p.t0 + p.change,
            scale: h.scale,
        })
    }

    /// Verifies pending forecasts whose target is `ts_ms` against the observed
    /// `temperature`. With `learn` the correction and interval adapt (callers skip it for
    /// readings flagged anomalous, so a faulty sensor does not teach the model).
    pub fn observe(&mut self, ts_ms: u64, temperature: f32, learn: bool, model: &ForecastModel) -> Vec<Verified> {
        let mut verified = Vec::new();
        for (state, hm) in self.horizons.iter_mut().zip(&model.horizons) {
            let horizon_ms = u64::from(hm.hours) * HOUR_MS;
            while let Some(p) = state.pending.front() {
                let target = p.origin_ms + horizon_ms;
                if ts_ms < target {
                    break;
                }
                let Some(p) = state.pending.pop_front() else { break };
                if ts_ms > target + TARGET_SLACK_MS || !temperature.is_finite() {
                    continue;
                }
                let actual_change = temperature - p.t0;
                let error = actual_change - p.change;
                let covered = error.abs() <= p.half;
                verified.push(Verified {
                    hours: hm.hours,
                    origin_ms: p.origin_ms,
                    t0: p.t0,
                    predicted: p.t0 + p.change,
                    actual: temperature,
                    covered,
                });
                if learn {
                    let slot = usize::from(p.slot) % 24;
                    let profile = if hm.hours >= 24 { 0.0 } else { state.profile[slot] };
                    state.rls.update(
                        &correction_input(&p.inputs, p.base, hm.hours),
                        actual_change - p.base - profile,
                        model.clip * state.scale,
                        &model.online,
                    );
                    if hm.hours < 24 {
                        state.profile[slot] +=
                            model.profile_rate * (actual_change - p.base - p.correction - state.profile[slot]);
                    }
                    let miss = if covered { 0.0 } else { 1.0 };
                    state.k = (state.k.ln() + model.interval.step * (miss - (1.0 - COVERAGE)))
                        .exp()
                        .clamp(0.2, 10.0);
                    state.scale += model.interval.scale_rate * (error.abs() - state.scale);
                    state.scale = state.scale.max(0.05);
                }
            }
        }
        verified
    }

    /// Forecasts from `features` made at `origin_ms`. The first origin of each hour is
    /// remembered for learning, which bounds the pending state at one per hour.
    pub fn forecast(&mut self, f: &Features, origin_ms: u64, model: &ForecastModel) -> [Forecast; 3] {
        let hour = origin_ms / HOUR_MS;
        let hour_slot = ((f.hour_angle / std::f32::consts::TAU * 24.0) as usize).min(23);
        let remember = self.last_origin_hour.is_none_or(|h| hour > h);
        if remember {
            self.last_origin_hour = Some(hour);
        }
        let mut out = [Forecast {
            horizon_hours: 0,
            temperature: f.t0,
            lower: f.t0,
            upper: f.t0,
        }; 3];
        for ((state, hm), slot) in self.horizons.iter_mut().zip(&model.horizons).zip(&mut out) {
            let weights = match f.variant {
                Variant::Full => &hm.full,
                Variant::Short => &hm.short,
            };
            let base: f32 = weights.iter().zip(&f.x).map(|(w, x)| w * x).sum();
            let inputs = CorrectionInputs::of(f);
            let z = correction_input(&inputs, base, hm.hours);
            let correction = state.rls.predict(&z);
            let profile = if hm.hours >= 24 { 0.0 } else { state.profile[hour_slot] };
            let change = hm.gain * (base + correction + profile);
            let half = state.k * state.scale;
            *slot = Forecast {
                horizon_hours: hm.hours,
                temperature: f.t0 + change,
                lower: f.t0 + change - half,
                upper: f.t0 + change + half,
            };
            if remember {
                state.pending.push_back(Pending {
                    origin_ms,
                    inputs,
                    base,
                    change,
                    correction,
                    slot: hour_slot as u8,
                    half,
                    t0: f.t0,
                });
            }
        }
        out
    }

    /// Drops forecasts waiting for a target that will never come (a new stretch).
    pub fn clear_pending(&mut self) {
        for h in &mut self.horizons {
            h.pending.clear();
        }
        self.last_origin_hour = None;
    }

    /// Approximate size in bytes, for the state budget.
    pub fn size_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self
                .horizons
                .iter()
                .map(|h| std::mem::size_of::<HorizonState>() + h.pending.capacity() * std::mem::size_of::<Pending>())
                .sum::<usize>()
    }
}
