//! One station's whole ML state and the single step every path runs per observation.
//!
//! `evaluate` calls [`StationState::step`] per CSV row and the dataflow operator per
//! closed window, so detectors, learner and forecaster see identical sequences of
//! operations offline and online. Models are passed in on every step rather than owned,
//! which is what lets the registry swap them under a running station without touching
//! its state.

use serde::{Deserialize, Serialize};

use super::anomaly::{Anomaly, AnomalyModel, DETECTOR_DIMS, DetectorState, detect, detector_row};
use super::features::{self, Location, Variant};
use super::forecast::{Forecast, ForecastModel, StationForecaster, Verified};
use super::history::{History, Obs, TEMPERATURE};

/// A model with the registry version that names it in every prediction.
#[derive(Clone, Debug)]
pub struct Versioned<M> {
    /// Registry version, e.g. `v3`.
    pub version: String,
    /// The model.
    pub model: M,
}

/// The models one step uses.
#[derive(Clone, Debug)]
pub struct Models {
    /// Forecasts.
    pub forecast: std::sync::Arc<Versioned<ForecastModel>>,
    /// Anomalies.
    pub anomaly: std::sync::Arc<Versioned<AnomalyModel>>,
}

/// What one step produced.
#[derive(Clone, Debug)]
pub struct StepOutput {
    /// Forecasts at 1, 6 and 24 h, unless the observation had no temperature.
    pub forecasts: Option<[Forecast; 3]>,
    /// The variant that made them.
    pub variant: Option<Variant>,
    /// The anomaly verdict.
    pub anomaly: Anomaly,
    /// Earlier forecasts this observation verified.
    pub verified: Vec<Verified>,
}

/// History, online forecaster and detector state of one station.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StationState {
    history: History,
    forecaster: StationForecaster,
    detector: DetectorState,
}

impl StationState {
    /// A new station at the models' prior.
    pub fn new(models: &Models) -> StationState {
        StationState {
            history: History::default(),
            forecaster: StationForecaster::new(&models.forecast.model),
            detector: DetectorState::default(),
        }
    }

    /// Starts a new unbroken stretch (a data segment): history, pending forecasts and
    /// detector state go, while what the station has *learned* stays.
    pub fn new_stretch(&mut self) {
        self.forecaster.clear_pending();
        self.history.reset();
        self.detector = DetectorState::default();
    }

    /// Processes one observation: score it against the past, verify and learn from the
    /// forecasts it completes (unless it looks faulty), add it to the history, forecast.
    pub fn step(&mut self, obs: Obs, loc: Location, models: &Models) -> StepOutput {
        let row = self.forest_input(&obs);
        let forest_score = models.anomaly.model.forest.score(&row);
        self.step_scored(obs, loc, models, forest_score)
    }

    /// The isolation forest's input for `obs`. The dataflow operator collects these for a
    /// whole batch and scores them together ([`IsolationForest::score_batch`], tree by
    /// tree, cache-friendly), then calls [`StationState::step_scored`] per station.
    ///
    /// [`IsolationForest::score_batch`]: super::forest::IsolationForest::score_batch
    pub fn forest_input(&self, obs: &Obs) -> [f32; DETECTOR_DIMS] {
        detector_row(&self.history, obs, self.forecaster.expectation(obs.ts_ms))
    }

    /// [`StationState::step`] with the forest score of [`StationState::forest_input`]
    /// already computed.
    pub fn step_scored(&mut self, obs: Obs, loc: Location, models: &Models, forest_score: f32) -> StepOutput {
        let expected = self.forecaster.expectation(obs.ts_ms);
        let anomaly = detect(
            &mut self.detector,
            &self.history,
            &obs,
            expected,
            forest_score,
            &models.anomaly.model,
        );
        let verified = self.forecaster.observe(
            obs.ts_ms,
            obs.values[TEMPERATURE],
            !anomaly.is_anomaly,
            &models.forecast.model,
        );
        if !self.history.push(obs) {
            // Out of order: nothing new to forecast from.
            return StepOutput {
                forecasts: None,
                variant: None,
                anomaly,
                verified,
            };
        }
        let (forecasts, variant) = match features::build(&self.history, loc) {
            Some(f) => (
                Some(self.forecaster.forecast(&f, obs.ts_ms, &models.forecast.model)),
                Some(f.variant),
            ),
            None => (None, None),
        };
        StepOutput {
            forecasts,
            variant,
            anomaly,
            verified,
        }
    }

    /// The history (read-only), for training.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Approximate state size in bytes.
    pub fn size_bytes(&self) -> usize {
        self.history.size_bytes() + self.forecaster.size_bytes() + std::mem::size_of::<DetectorState>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::features::Location;

    #[test]
    fn state_stays_within_its_budget_under_minute_windows() {
        let models = crate::ml::registry::load_latest(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("models")
                .as_path(),
        )
        .expect("committed models load");
        let mut state = StationState::new(&models);
        // 30 h of one window a minute: every pending queue is at its longest.
        for minute in 0..30 * 60u64 {
            let t = 10.0 + (minute as f32 / 229.0).sin() * 4.0;
            let obs = Obs {
                ts_ms: 1_767_225_600_000 + minute * 60_000,
                values: [t, 70.0, 1010.0, 3.0],
            };
            let out = state.step(obs, Location::default(), &models);
            assert!(out.forecasts.is_some());
        }
        assert!(state.history().hours() >= 29.0);
        let bytes = state.size_bytes();
        eprintln!("ML state per station: {bytes} B");
        assert!(bytes <= 4096, "ML state per station is {bytes} B");
    }
}
