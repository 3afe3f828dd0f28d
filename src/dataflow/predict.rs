//! The forecast and anomaly operator: one [`Prediction`] per emitted window.
//!
//! It sits right after window emission on the same worker (pipeline channel): windows are
//! already partitioned by station, and emission produces each station's windows in
//! window-end order, which is exactly the order [`StationState::step`] needs. So no
//! exchange, no buffering and no notificator are needed; the operator is a `unary` map
//! with per-station state.
//!
//! Hot reload: the process's reload thread reads and validates new versions
//! ([`crate::ml::reload`]); this operator only asks its [`Subscriber`] whether the shared
//! models changed, one atomic load per activation, so no file is read on the worker. New
//! models replace the `Arc`s used for the next window, while every station's history,
//! learned correction and detector state stay as they are, so a swap costs no warm-up.
//! Each prediction names the versions that made it.

use std::sync::Arc;

use rustc_hash::FxHashMap;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use crate::metrics::Metrics;
use crate::ml::anomaly::DETECTOR_DIMS;
use crate::ml::features::Location;
use crate::ml::history::Obs;
use crate::ml::reload::Subscriber;
use crate::ml::station::{Models, StationState};
use crate::schema::{AnomalyRecord, ForecastRecord, ModelVersions, Prediction, VariableStats, WindowFeatures, round3};

fn mean(stats: &Option<VariableStats>) -> f32 {
    stats.as_ref().map_or(f32::NAN, |s| s.mean as f32)
}

/// The observation a window stands for: its means, at its end.
pub fn observation(w: &WindowFeatures) -> Obs {
    Obs {
        ts_ms: w.window_end,
        values: [
            mean(&w.temperature),
            mean(&w.humidity),
            mean(&w.pressure),
            mean(&w.wind_speed),
        ],
    }
}

fn versions_of(models: &Models) -> ModelVersions {
    ModelVersions {
        forecast: models.forecast.version.as_str().into(),
        anomaly: models.anomaly.version.as_str().into(),
    }
}

/// Station coordinates by id (from the station catalogue), for solar time and clear-sky
/// features; a station missing here is forecast on UTC hours without them.
pub type Locations = Arc<std::collections::HashMap<String, Location>>;

/// Applies the models to every window. `reload` enables hot reload.
pub fn predictions<'s>(
    windows: StreamVec<'s, u64, WindowFeatures>,
    mut models: Models,
    mut reload: Option<Subscriber>,
    metrics: Arc<Metrics>,
    locations: Locations,
) -> StreamVec<'s, u64, Prediction> {
    let mut stations: FxHashMap<String, StationState> = FxHashMap::default();
    let mut rows: Vec<[f32; DETECTOR_DIMS]> = Vec::new();
    let mut scores: Vec<f32> = Vec::new();
    let mut versions = versions_of(&models);
    windows.unary(Pipeline, "Predict", move |_cap, _info| {
        move |input, output| {
            if let Some(r) = reload.as_mut()
                && let Some(new) = r.poll()
            {
                tracing::info!(
                    forecast = %new.forecast.version,
                    anomaly = %new.anomaly.version,
                    stations = stations.len(),
                    "models reloaded; station state kept"
                );
                models = new;
                versions = versions_of(&models);
            }
            let (mut made, mut flagged) = (0u64, 0u64);
            input.for_each(|cap, data| {
                // One batch holds one window end, so at most one window per station: the
                // forest can score the whole batch before any station steps.
                rows.clear();
                for window in data.iter() {
                    // New stations are created here, so the second pass finds every one.
                    if !stations.contains_key(&window.station_id) {
                        stations.insert(window.station_id.clone(), StationState::new(&models));
                    }
                    let state = &stations[&window.station_id];
                    rows.push(state.forest_input(&observation(window)));
                }
                scores.resize(rows.len(), 0.0);
                models.anomaly.model.forest.score_batch(&rows, &mut scores);
                let mut session = output.session(&cap);
                for (window, &forest_score) in data.drain(..).zip(&scores) {
                    let obs = observation(&window);
                    let Some(state) = stations.get_mut(&window.station_id) else {
                        continue;
                    };
                    let location = locations.get(&window.station_id).copied().unwrap_or_default();
                    let step = state.step_scored(obs, location, &models, forest_score);
                    let Some(forecasts) = step.forecasts else { continue };
                    made += 1;
                    flagged += u64::from(step.anomaly.is_anomaly);
                    session.give(Prediction {
                        station_id: window.station_id,
                        window_end: window.window_end,
                        temperature: round3(obs.values[0]),
                        forecasts: forecasts.map(|f| ForecastRecord {
                            horizon_hours: f.horizon_hours,
                            temperature: round3(f.temperature),
                            lower: round3(f.lower),
                            upper: round3(f.upper),
                        }),
                        forecast_variant: step.variant.map_or("short_history", |v| v.as_str()).to_string(),
                        anomaly: AnomalyRecord {
                            score: round3(step.anomaly.score),
                            is_anomaly: step.anomaly.is_anomaly,
                            reasons: step.anomaly.reasons,
                        },
                        models: versions.clone(),
                    });
                }
            });
            if made > 0 {
                metrics.add_predictions(made, flagged);
            }
        }
    })
}
