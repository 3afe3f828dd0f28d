//! Offline training from hourly station CSVs.
//!
//! Training walks every station through the *same* [`History`] and feature builder the
//! dataflow uses, one segment at a time (no lag crosses a segment boundary), and:
//!
//! 1. fits one smartcore ridge regression per horizon and variant on the temperature
//!    change, pooled over stations;
//! 2. replays the stations through the fitted forecaster (with its online learner, as in
//!    production) to collect the anomaly detectors' inputs, and fits the isolation forest
//!    on them. The historical files are clean, so the forest learns ordinary weather.
//!
//! Everything is deterministic: the same data and seed give byte-identical models.

use serde::{Deserialize, Serialize};
use smartcore::linalg::basic::arrays::Array;
use smartcore::linalg::basic::matrix::DenseMatrix;
use smartcore::linear::ridge_regression::{RidgeRegression, RidgeRegressionParameters};

use super::MlError;
use super::anomaly::{AnomalyModel, DETECTOR_DIMS, RuleParams, detector_row};
use super::data::StationData;
use super::features::{self, N_FEATURES, Variant};
use super::forecast::{ForecastModel, HORIZONS, HorizonModel, IntervalParams, StationForecaster};
use super::forest::{ForestParams, IsolationForest};
use super::history::{HOUR_MS, History, TEMPERATURE};
use super::rls::RlsParams;

/// Everything training can be told.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainParams {
    /// Ridge penalty of the pooled forecast models.
    pub ridge_alpha: f64,
    /// The per-station online learner.
    pub online: RlsParams,
    /// Interval adaptation.
    pub interval: IntervalParams,
    /// Learning rate of the per-station hour-of-day residual profile.
    pub profile_rate: f32,
    /// Reweighting rounds toward a least-absolute-deviation fit (0 = plain ridge).
    pub irls_rounds: usize,
    /// The online learner's error clip, in error-scale units.
    pub clip: f32,
    /// Isolation forest.
    pub forest: ForestParams,
    /// Rule thresholds.
    pub rules: RuleParams,
}

impl Default for TrainParams {
    fn default() -> Self {
        TrainParams {
            ridge_alpha: 1.0,
            online: RlsParams::default(),
            interval: IntervalParams::default(),
            profile_rate: 0.02,
            irls_rounds: 4,
            clip: 1.0,
            forest: ForestParams::default(),
            rules: RuleParams::default(),
        }
    }
}

/// Sample counts of a training run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TrainStats {
    /// Forecast samples per horizon (full variant).
    pub forecast_samples_full: Vec<usize>,
    /// Forecast samples per horizon (short variant).
    pub forecast_samples_short: Vec<usize>,
    /// In-sample MAE of the pooled full model per horizon.
    pub forecast_train_mae: Vec<f32>,
    /// Rows the forest was trained on.
    pub forest_rows: usize,
}

/// Trained models and how they were made.
#[derive(Clone, Debug)]
pub struct Trained {
    /// The forecast model.
    pub forecast: ForecastModel,
    /// The anomaly model.
    pub anomaly: AnomalyModel,
    /// Counts.
    pub stats: TrainStats,
}

/// Calls `f(index, features)` for every row of every segment of `station`, with the
/// history built up to and including that row.
fn walk(station: &StationData, mut f: impl FnMut(usize, &History)) {
    let mut history = History::default();
    let mut segment: Option<&str> = None;
    for (i, row) in station.rows.iter().enumerate() {
        if segment != Some(row.segment.as_str()) {
            history.reset();
            segment = Some(row.segment.as_str());
        }
        history.push(row.obs);
        f(i, &history);
    }
}

/// The temperature `hours` after row `i` in the same segment, if observed.
fn target(station: &StationData, i: usize, hours: u32) -> Option<f32> {
    let origin = station.rows.get(i)?;
    let row = station.rows.get(i + hours as usize)?;
    (row.segment == origin.segment && row.obs.ts_ms == origin.obs.ts_ms + u64::from(hours) * HOUR_MS)
        .then(|| row.obs.get(TEMPERATURE))
        .flatten()
}

#[derive(Default)]
struct Samples {
    x: Vec<f64>,
    y: Vec<f64>,
}

impl Samples {
    fn push(&mut self, x: &[f32; N_FEATURES], y: f32) {
        self.x.extend(x.iter().map(|v| f64::from(*v)));
        self.y.push(f64::from(y));
    }
    fn len(&self) -> usize {
        self.y.len()
    }
}

fn ridge(x: &[f64], y: &[f64], alpha: f64) -> Result<Vec<f32>, MlError> {
    let n = y.len();
    let matrix = DenseMatrix::new(n, N_FEATURES, x.to_vec(), false).map_err(|e| MlError::Train(e.to_string()))?;
    // Features are already on comparable scales, and the bias is a feature: no
    // normalisation (which rejects constant columns such as an absent pressure).
    let params = RidgeRegressionParameters::default()
        .with_alpha(alpha)
        .with_normalize(false);
    let model: RidgeRegression<f64, f64, DenseMatrix<f64>, Vec<f64>> =
        RidgeRegression::fit(&matrix, &y.to_vec(), params).map_err(|e| MlError::Train(e.to_string()))?;
    let coefficients = model.coefficients();
    let weights: Vec<f32> = (0..N_FEATURES).map(|i| *coefficients.get((i, 0)) as f32).collect();
    if weights.iter().any(|w| !w.is_finite()) {
        return Err(MlError::Train("ridge regression produced non-finite weights".into()));
    }
    Ok(weights)
}

/// Ridge regression refitted by iteratively reweighted least squares toward the least
/// absolute deviation fit: forecasts are judged by MAE, and weather changes are
/// heavy-tailed (fronts), which pull a plain least-squares fit away from the typical case.
fn fit_ridge(samples: &Samples, alpha: f64, irls_rounds: usize) -> Result<Vec<f32>, MlError> {
    if samples.len() <= N_FEATURES {
        return Err(MlError::Train(format!(
            "{} forecast samples; need more than {N_FEATURES} (is the data at least a few days long?)",
            samples.len()
        )));
    }
    let mut weights = ridge(&samples.x, &samples.y, alpha)?;
    for _ in 0..irls_rounds {
        let mut x = Vec::with_capacity(samples.x.len());
        let mut y = Vec::with_capacity(samples.y.len());
        for (row, target) in samples.x.chunks_exact(N_FEATURES).zip(&samples.y) {
            let predicted: f64 = row.iter().zip(&weights).map(|(a, b)| a * f64::from(*b)).sum();
            // w = 1 / |r| (floored), applied as √w to rows and targets.
            let w = 1.0 / (target - predicted).abs().max(0.1);
            let root = w.sqrt();
            x.extend(row.iter().map(|v| v * root));
            y.push(target * root);
        }
        weights = ridge(&x, &y, alpha)?;
    }
    Ok(weights)
}

fn quantile(values: &mut [f32], q: f32) -> f32 {
    if values.is_empty() {
        return f32::NAN;
    }
    values.sort_by(f32::total_cmp);
    let i = ((values.len() - 1) as f32 * q).round() as usize;
    values[i]
}

/// Fits the pooled forecast models (gains 1).
fn train_forecast_pooled(stations: &[StationData], p: &TrainParams) -> Result<(ForecastModel, TrainStats), MlError> {
    let mut full: Vec<Samples> = HORIZONS.iter().map(|_| Samples::default()).collect();
    let mut short: Vec<Samples> = HORIZONS.iter().map(|_| Samples::default()).collect();
    for station in stations {
        walk(station, |i, history| {
            let Some(f) = features::build(history, station.location) else {
                return;
            };
            let mut masked = f.x;
            features::mask_short(&mut masked);
            for (k, &hours) in HORIZONS.iter().enumerate() {
                let Some(actual) = target(station, i, hours) else {
                    continue;
                };
                let change = actual - f.t0;
                let (mut x, mut xs) = (f.x, masked);
                if hours >= 24 {
                    for i in 0..N_FEATURES {
                        if !features::DAY_AHEAD.contains(&i) {
                            x[i] = 0.0;
                            xs[i] = 0.0;
                        }
                    }
                }
                short[k].push(&xs, change);
                if f.variant == Variant::Full {
                    full[k].push(&x, change);
                }
            }
        });
    }
    let mut stats = TrainStats::default();
    let mut horizons = Vec::new();
    for (k, &hours) in HORIZONS.iter().enumerate() {
        let w_full = fit_ridge(&full[k], p.ridge_alpha, p.irls_rounds)?;
        let w_short = fit_ridge(&short[k], p.ridge_alpha, p.irls_rounds)?;
        let mut abs: Vec<f32> = full[k]
            .x
            .chunks_exact(N_FEATURES)
            .zip(&full[k].y)
            .map(|(x, y)| (*y as f32 - x.iter().zip(&w_full).map(|(a, b)| *a as f32 * b).sum::<f32>()).abs())
            .collect();
        let mae = abs.iter().sum::<f32>() / abs.len() as f32;
        let k80 = quantile(&mut abs, super::forecast::COVERAGE) / mae;
        stats.forecast_samples_full.push(full[k].len());
        stats.forecast_samples_short.push(short[k].len());
        stats.forecast_train_mae.push(mae);
        horizons.push(HorizonModel {
            hours,
            full: w_full,
            short: w_short,
            mae,
            k80,
            gain: 1.0,
        });
    }
    let model = ForecastModel {
        horizons,
        online: p.online,
        interval: p.interval,
        profile_rate: p.profile_rate,
        clip: p.clip,
    };
    model.validate()?;
    Ok((model, stats))
}

/// Gains tried per horizon by [`choose_gains`].
const GAINS: [f32; 5] = [0.0, 0.25, 0.5, 0.75, 1.0];

/// Sums of absolute forecast errors per horizon when `station` is replayed through the
/// online forecaster with `model` (origins at least 24 h into their segment, as in
/// `evaluate`).
fn replay_errors(station: &StationData, model: &ForecastModel) -> [f64; 3] {
    let mut sums = [0.0f64; 3];
    let mut forecaster = StationForecaster::new(model);
    let mut history = History::default();
    let mut segment: Option<&str> = None;
    let mut segment_start = 0;
    for row in &station.rows {
        if segment != Some(row.segment.as_str()) {
            history.reset();
            forecaster.clear_pending();
            segment = Some(row.segment.as_str());
            segment_start = row.obs.ts_ms;
        }
        for v in forecaster.observe(row.obs.ts_ms, row.obs.values[TEMPERATURE], true, model) {
            if v.origin_ms >= segment_start + 24 * HOUR_MS
                && let Some(k) = HORIZONS.iter().position(|h| *h == v.hours)
            {
                sums[k] += f64::from((v.predicted - v.actual).abs());
            }
        }
        history.push(row.obs);
        if let Some(f) = features::build(&history, station.location) {
            forecaster.forecast(&f, row.obs.ts_ms, model);
        }
    }
    sums
}

/// Chooses each horizon's gain by leave-one-station-out *within* the training stations:
/// train on all but one, replay the one left out at every gain, and keep the gain with the
/// smallest total error. With a single station the gains stay 1.
fn choose_gains(stations: &[StationData], p: &TrainParams, model: &mut ForecastModel) -> Result<(), MlError> {
    if stations.len() < 2 {
        return Ok(());
    }
    let mut totals = [[0.0f64; GAINS.len()]; 3];
    for (i, held_out) in stations.iter().enumerate() {
        let others: Vec<StationData> = stations
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, s)| s.clone())
            .collect();
        let (mut inner, _) = train_forecast_pooled(&others, p)?;
        for (g, gain) in GAINS.iter().enumerate() {
            for h in &mut inner.horizons {
                h.gain = *gain;
            }
            for (k, sum) in replay_errors(held_out, &inner).iter().enumerate() {
                totals[k][g] += sum;
            }
        }
    }
    for (h, errors) in model.horizons.iter_mut().zip(&totals) {
        let full = GAINS.len() - 1;
        let best = errors
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map_or(full, |(g, _)| g);
        // Shrink only when it clearly helps: two or three stations make a noisy vote.
        h.gain = if errors[best] < 0.99 * errors[full] {
            GAINS[best]
        } else {
            1.0
        };
    }
    Ok(())
}

/// Fits the pooled forecast models and chooses their gains.
pub fn train_forecast(stations: &[StationData], p: &TrainParams) -> Result<(ForecastModel, TrainStats), MlError> {
    let (mut model, stats) = train_forecast_pooled(stations, p)?;
    choose_gains(stations, p, &mut model)?;
    model.validate()?;
    Ok((model, stats))
}

/// Fits the anomaly model on the detectors' view of (clean) training data.
pub fn train_anomaly(
    stations: &[StationData],
    forecast: &ForecastModel,
    p: &TrainParams,
) -> Result<(AnomalyModel, usize), MlError> {
    let mut rows: Vec<Vec<f32>> = Vec::new();
    for station in stations {
        let mut forecaster = StationForecaster::new(forecast);
        let mut history = History::default();
        let mut segment: Option<&str> = None;
        for row in &station.rows {
            if segment != Some(row.segment.as_str()) {
                history.reset();
                forecaster.clear_pending();
                segment = Some(row.segment.as_str());
            }
            let expected = forecaster.expectation(row.obs.ts_ms);
            rows.push(detector_row(&history, &row.obs, expected).to_vec());
            forecaster.observe(row.obs.ts_ms, row.obs.values[TEMPERATURE], true, forecast);
            history.push(row.obs);
            if let Some(f) = features::build(&history, station.location) {
                forecaster.forecast(&f, row.obs.ts_ms, forecast);
            }
        }
    }
    let forest = IsolationForest::fit(&rows, p.forest)?;
    let mut scores = vec![0.0; rows.len()];
    forest.score_batch(&rows, &mut scores);
    let median = quantile(&mut scores, 0.5);
    let threshold = quantile(&mut scores, 0.999);
    let model = AnomalyModel {
        forest,
        forest_median: median,
        forest_threshold: threshold.max(median + 0.01),
        rules: p.rules,
    };
    debug_assert_eq!(model.forest.dims, DETECTOR_DIMS);
    model.validate()?;
    Ok((model, rows.len()))
}

/// Trains both models.
pub fn train(stations: &[StationData], p: &TrainParams) -> Result<Trained, MlError> {
    if stations.is_empty() {
        return Err(MlError::Train("no training stations".into()));
    }
    let (forecast, mut stats) = train_forecast(stations, p)?;
    let (anomaly, forest_rows) = train_anomaly(stations, &forecast, p)?;
    stats.forest_rows = forest_rows;
    Ok(Trained {
        forecast,
        anomaly,
        stats,
    })
}
