//! Anomaly detection: an isolation forest plus the rules a forest cannot learn.
//!
//! Each detector turns one statistic into a normalised strength `z` (1 = at its
//! threshold) and a sub-score `z² / (1 + z²)`, which is 0.5 at the threshold and tends
//! to 1. Sub-scores combine by noisy-OR, `1 − Π(1 − sᵢ)`, so independent weak evidence
//! adds up while one strong detector is enough. `is_anomaly` means the combined score is
//! at least 0.5, and every detector at or above its threshold contributes a reason.
//!
//! | detector | statistic | why |
//! |---|---|---|
//! | range | value outside the physical range of docs/design.md §3 | a forest cannot flag values outside its training range |
//! | temperature jump | \|ΔT\| / √Δt against the previous observation | spikes |
//! | pressure jump | \|Δp\| / √Δt | sensor dropouts; real pressure moves ≤ 3 hPa/h |
//! | dew point | its jump per √Δt, or its distance from the median of the last 6 hourly dew points | humidity jumps: dew point, unlike RH, barely moves with the daily cycle |
//! | stuck | identical temperatures while the forecast and the humidity say it should move | stuck sensors |
//! | forecast residual | \|T − 1 h forecast\| in units of the station's error scale | anything the forecast did not expect |
//! | drift | two-sided CUSUM of standardised forecast residuals | slow sensor drift |
//! | forest | isolation-forest score of the station-agnostic vector of [`detector_row`] | unusual combinations |
//!
//! Changes are divided by √(hours elapsed), so one threshold serves hourly rows and
//! minute windows alike (a random-walk scaling); the per-station state is a few scalars.

use serde::{Deserialize, Serialize};

use super::MlError;
use super::features::{dewpoint, or_zero};
use super::forecast::Expectation;
use super::forest::IsolationForest;
use super::history::{HOUR_MS, HUMIDITY, History, Obs, PRESSURE, TEMPERATURE, WIND};
use crate::schema::Var;

/// Width of the forest's input row.
pub const DETECTOR_DIMS: usize = 7;

/// Names of the forest's inputs, for metadata.
pub const DETECTOR_NAMES: [&str; DETECTOR_DIMS] = [
    "temperature_change_per_sqrt_h",
    "dewpoint_change_per_sqrt_h",
    "pressure_change_per_sqrt_h",
    "humidity_centred",
    "wind_speed",
    "forecast_residual_scaled",
    "temperature_minus_mean24h",
];

/// Thresholds of the rule detectors, stored with the model so they are versioned too.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleParams {
    /// Temperature change per √h at the threshold, °C, beyond `temperature_calm`.
    pub temperature_jump: f32,
    /// Temperature change per √h that counts as no evidence, °C (an ordinary hour).
    #[serde(default)]
    pub temperature_calm: f32,
    /// Pressure change per √h at the threshold, hPa, beyond `pressure_calm`.
    pub pressure_jump: f32,
    /// Pressure change per √h that counts as no evidence at all, hPa: real pressure
    /// moves up to about 2 hPa in an hour, and scoring those would rank ordinary hours
    /// above weak faults of other kinds.
    #[serde(default)]
    pub pressure_calm: f32,
    /// Dew-point change per √h at the threshold, °C, beyond `dewpoint_calm`.
    pub dewpoint_jump: f32,
    /// Dew-point change per √h that counts as no evidence, °C.
    #[serde(default)]
    pub dewpoint_calm: f32,
    /// Dew-point distance from its 6 h median at the threshold, °C.
    pub dewpoint_shift: f32,
    /// Evidence against a flat temperature run at the threshold: the run's summed
    /// forecast misses in error-scale units plus its humidity movement / 5 %.
    pub stuck_evidence: f32,
    /// Scale of the forest's strength: its threshold counts as this many rule thresholds.
    pub forest_weight: f32,
    /// Forecast residual at the threshold, in error-scale units, beyond `residual_calm`.
    pub residual: f32,
    /// Forecast residual that counts as no evidence, in error-scale units.
    #[serde(default)]
    pub residual_calm: f32,
    /// CUSUM slack per step, in error-scale units.
    pub cusum_slack: f32,
    /// CUSUM sum at the threshold.
    pub cusum_limit: f32,
}

impl Default for RuleParams {
    fn default() -> Self {
        RuleParams {
            temperature_jump: 5.0,
            temperature_calm: 2.0,
            pressure_jump: 3.0,
            pressure_calm: 2.0,
            dewpoint_jump: 5.0,
            dewpoint_calm: 3.0,
            dewpoint_shift: 14.0,
            stuck_evidence: 8.0,
            forest_weight: 0.15,
            residual: 9.0,
            residual_calm: 3.0,
            cusum_slack: 1.0,
            cusum_limit: 12.0,
        }
    }
}

/// The trained anomaly model: what `models/anomaly/<version>/model.json` holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnomalyModel {
    /// The forest over [`detector_row`] vectors.
    pub forest: IsolationForest,
    /// Median forest score on the training rows: the forest's "nothing unusual".
    pub forest_median: f32,
    /// The 99.9 % quantile of training scores: the forest's threshold.
    pub forest_threshold: f32,
    /// Rule thresholds.
    pub rules: RuleParams,
}

impl AnomalyModel {
    /// Checks the model after loading.
    pub fn validate(&self) -> Result<(), MlError> {
        self.forest.validate()?;
        if self.forest.dims != DETECTOR_DIMS {
            return Err(MlError::Model(format!(
                "anomaly forest has {} inputs, expected {DETECTOR_DIMS}",
                self.forest.dims
            )));
        }
        if self.forest_threshold.is_nan() || self.forest_threshold <= self.forest_median {
            return Err(MlError::Model("anomaly forest threshold must exceed its median".into()));
        }
        Ok(())
    }
}

/// The verdict on one observation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// Combined score in [0, 1].
    pub score: f32,
    /// `score ≥ 0.5`.
    pub is_anomaly: bool,
    /// Human-readable reasons, strongest first; empty when nothing reached a threshold.
    pub reasons: Vec<String>,
}

/// Per-station detector state: the flat run and the CUSUM sums.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DetectorState {
    flat_value: f32,
    flat_since_ms: u64,
    /// Humidity movement (% points) and expected temperature movement (°C) during the run.
    flat_rh_moves: f32,
    flat_expected_moves: f32,
    cusum_up: f32,
    cusum_down: f32,
}

fn sub_score(z: f32) -> f32 {
    if z.is_finite() && z > 0.0 {
        z * z / (1.0 + z * z)
    } else {
        0.0
    }
}

/// Hours between two observations, floored at one minute.
fn elapsed_hours(prev: &Obs, obs: &Obs) -> f32 {
    (obs.ts_ms.saturating_sub(prev.ts_ms) as f32 / HOUR_MS as f32).max(1.0 / 60.0)
}

/// The forest's input for `obs`, given the history *before* it and the expectation.
pub fn detector_row(h: &History, obs: &Obs, expected: Option<Expectation>) -> [f32; DETECTOR_DIMS] {
    let mut row = [0.0; DETECTOR_DIMS];
    let t = obs.values[TEMPERATURE];
    let rh = obs.values[HUMIDITY];
    if let Some(prev) = h.latest() {
        let root = elapsed_hours(prev, obs).sqrt();
        row[0] = or_zero((t - prev.values[TEMPERATURE]) / root);
        let td = dewpoint(t, rh);
        let td_prev = h.latest_dewpoint();
        row[1] = or_zero((td - td_prev) / root);
        row[2] = or_zero((obs.values[PRESSURE] - prev.values[PRESSURE]) / root);
    }
    row[3] = or_zero((rh - 70.0) / 30.0);
    row[4] = or_zero(obs.values[WIND] / 5.0);
    if let Some(e) = expected {
        row[5] = or_zero((t - e.temperature) / e.scale.max(0.3));
    }
    let (mut sum, mut n) = (0.0f32, 0u32);
    for k in 1..=24 {
        let v = h.hour_mean(k, TEMPERATURE);
        if v.is_finite() {
            sum += v;
            n += 1;
        }
    }
    if n >= 6 {
        row[6] = or_zero((t - sum / n as f32) / 5.0);
    }
    row
}

struct Finding {
    score: f32,
    reason: Option<String>,
}

/// Sub-score from which a finding's reason is formatted.
const REASON_MIN: f32 = 0.3;

/// Scores `obs` against the history *before* it, updating the station's detector state.
pub fn detect(
    state: &mut DetectorState,
    h: &History,
    obs: &Obs,
    expected: Option<Expectation>,
    forest_score: f32,
    model: &AnomalyModel,
) -> Anomaly {
    let r = &model.rules;
    let mut findings: Vec<Finding> = Vec::new();
    // Reasons are formatted only for findings strong enough to be reported: formatting
    // floats for every window would cost more than all the detectors together.
    let mut add = |z: f32, reason: &dyn Fn() -> String| {
        let score = sub_score(z);
        if score > 0.0 {
            let reason = (score >= REASON_MIN).then(reason);
            findings.push(Finding { score, reason });
        }
    };
    // Range: the physical limits of docs/design.md §3. The dataflow rejects such readings before
    // they get here; CSV replays and future sources may not.
    for (i, var) in Var::ALL.iter().enumerate() {
        let v = obs.values[i];
        let (lo, hi) = var.range();
        let (lo, hi) = (lo as f32, hi as f32);
        if v.is_finite() && (v < lo || v > hi) {
            let excess = if v > hi { v - hi } else { lo - v };
            add(2.0 + excess, &|| {
                format!("{} {v:.1} outside the physical range {lo}..{hi}", var.name())
            });
        }
    }
    let t = obs.values[TEMPERATURE];
    if let Some(prev) = h.latest() {
        let dt = elapsed_hours(prev, obs);
        let root = dt.sqrt();
        let minutes = (dt * 60.0).round();
        let dtemp = t - prev.values[TEMPERATURE];
        add(
            (dtemp.abs() / root - r.temperature_calm).max(0.0) / r.temperature_jump,
            &|| format!("temperature jump {dtemp:+.1} °C in {minutes} min"),
        );
        let dp = obs.values[PRESSURE] - prev.values[PRESSURE];
        add((dp.abs() / root - r.pressure_calm).max(0.0) / r.pressure_jump, &|| {
            format!("pressure jump {dp:+.1} hPa in {minutes} min")
        });
    }
    // Humidity: a sudden dew-point jump, or a dew point far from its recent median (which
    // also catches the readings after a jump that stays).
    let td = dewpoint(t, obs.values[HUMIDITY]);
    let shift = td - h.dewpoint_median6();
    let jump = h.latest().map_or(f32::NAN, |prev| {
        (td - h.latest_dewpoint()) / elapsed_hours(prev, obs).sqrt()
    });
    let z_jump = if jump.is_finite() {
        (jump.abs() - r.dewpoint_calm).max(0.0) / r.dewpoint_jump
    } else {
        0.0
    };
    let z_shift = if shift.is_finite() {
        shift.abs() / r.dewpoint_shift
    } else {
        0.0
    };
    add(z_jump.max(z_shift), &|| {
        format!(
            "humidity {:.0} % puts the dew point {:+.1} °C off its recent level",
            obs.values[HUMIDITY],
            if z_jump >= z_shift { jump } else { shift }
        )
    });
    // Stuck: identical temperature for a while, weighted by evidence that it should move.
    if (t - state.flat_value).abs() < 1e-3 && state.flat_since_ms > 0 {
        if let Some(prev) = h.latest() {
            // Only movement beyond what a flat-temperature hour ordinarily shows counts.
            state.flat_rh_moves += or_zero((obs.values[HUMIDITY] - prev.values[HUMIDITY]).abs() - 2.0).max(0.0);
        }
        if let Some(e) = expected {
            state.flat_expected_moves += ((e.temperature - t).abs() / e.scale.max(0.3) - 1.0).max(0.0);
        }
        let hours = obs.ts_ms.saturating_sub(state.flat_since_ms) as f32 / HOUR_MS as f32;
        // Flat runs happen naturally (calm nights, fog); what betrays a stuck sensor is a
        // run the forecast and the humidity say should have moved.
        // The run's length alone stays below the threshold but
        // ranks long runs above ordinary readings (capped at half the threshold).
        let evidence = state.flat_expected_moves + state.flat_rh_moves / 5.0;
        add((hours / 6.0).min(0.5) + evidence / r.stuck_evidence, &|| {
            format!("temperature stuck at {t:.1} °C for {hours:.1} h")
        });
    } else {
        state.flat_value = t;
        state.flat_since_ms = obs.ts_ms;
        state.flat_rh_moves = 0.0;
        state.flat_expected_moves = 0.0;
    }
    if let Some(e) = expected {
        let scale = e.scale.max(0.1);
        let residual = (t - e.temperature) / scale;
        add((residual.abs() - r.residual_calm).max(0.0) / r.residual, &|| {
            format!("temperature {:+.1} °C off its 1 h forecast", t - e.temperature)
        });
        // A spike is one residual, a drift is many: clip each step so one spike cannot
        // trip the CUSUM on its own.
        let step = residual.clamp(-3.0, 3.0);
        state.cusum_up = (state.cusum_up + step - r.cusum_slack).max(0.0);
        state.cusum_down = (state.cusum_down - step - r.cusum_slack).max(0.0);
        let cusum = state.cusum_up.max(state.cusum_down);
        let direction = if state.cusum_up >= state.cusum_down {
            "above"
        } else {
            "below"
        };
        add(cusum / r.cusum_limit, &|| {
            format!("temperature drifting {direction} its forecasts")
        });
        if cusum >= r.cusum_limit {
            state.cusum_up = 0.0;
            state.cusum_down = 0.0;
        }
    }
    let z = r.forest_weight * (forest_score - model.forest_median) / (model.forest_threshold - model.forest_median);
    add(z, &|| {
        format!("unusual combination of values (isolation score {forest_score:.2})")
    });

    let score = 1.0 - findings.iter().map(|f| 1.0 - f.score).product::<f32>();
    let score = score.clamp(0.0, 1.0);
    findings.sort_by(|a, b| b.score.total_cmp(&a.score));
    let is_anomaly = score >= 0.5;
    // Several weak findings can add up to a flag; the strongest then explains it.
    let keep = findings
        .iter()
        .filter(|f| f.score >= 0.5)
        .count()
        .max(usize::from(is_anomaly));
    let mut reasons: Vec<String> = findings.into_iter().take(keep).filter_map(|f| f.reason).collect();
    if is_anomaly && reasons.is_empty() {
        reasons.push("several weak signals together".into());
    }
    Anomaly {
        score,
        is_anomaly,
        reasons,
    }
}
