//! The forecast and anomaly operator: one [`Prediction`] per emitted window.
//!
//! It sits right after window emission on the same worker (pipeline channel): windows are
//! already partitioned by station, and emission produces each station's windows in
//! window-end order, which is exactly the order [`StationState::step`] needs. So no
//! exchange, no buffering and no notificator are needed; the operator maps each window
//! with its station's state.
//!
//! Hot reload: the process's reload thread reads and validates new versions
//! ([`crate::ml::reload`]); this operator only asks its [`Subscriber`] whether the shared
//! models changed, one atomic load per activation, so no file is read on the worker. New
//! models replace the `Arc`s used for the next window, while every station's history,
//! learned correction and detector state stay as they are, so a swap costs no warm-up.
//! Each prediction names the versions that made it.
//!
//! Checkpointing (docs/design.md §5.6): with the Kafka source the operator also writes each
//! changed station's state to the state topic, at most every `--state-interval`. It is a
//! two-output operator so that the snapshot is taken at an exact point of the input: when
//! the frontier reaches `F`, every window before `F` has been taken in. Its state output
//! holds a capability at the last snapshot's time and moves it to `F` with the next one, so
//! the state sink's frontier, part of the durable frontier, never claims more than the
//! acknowledged snapshots hold.

mod book;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{ProbeHandle, StreamVec};

use crate::dataflow::StationLimits;
use crate::metrics::Metrics;
use crate::ml::anomaly::DETECTOR_DIMS;
use crate::ml::features::Location;
use crate::ml::history::Obs;
use crate::ml::reload::Subscriber;
use crate::ml::snapshot::Restored;
use crate::ml::station::Models;
use crate::schema::{AnomalyRecord, ForecastRecord, ModelVersions, Prediction, VariableStats, WindowFeatures, round3};
use book::Book;
pub use book::StateRecord;

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

/// Checkpointing of the predictor's state (docs/design.md §5.6).
#[derive(Clone)]
pub struct Checkpointing {
    /// Least wall time between two snapshots that carry records.
    pub interval: Duration,
    /// The states an earlier run checkpointed.
    pub restored: Arc<Restored>,
    /// The run's stop flag: a stopping run snapshots at once.
    pub stop: Arc<AtomicBool>,
}

/// The predictor's outputs.
pub struct Predicted<'s> {
    /// One prediction per window.
    pub predictions: StreamVec<'s, u64, Prediction>,
    /// With checkpointing, the station states to write. A record at time `t` is part of a
    /// snapshot that covers every window before the *next* time the stream's frontier
    /// reaches, so a sink that holds its time until the broker has it keeps the durable
    /// frontier at the last acknowledged snapshot.
    pub states: StreamVec<'s, u64, StateRecord>,
}

/// Applies the models to every window. `reload` enables hot reload; `checkpointing`
/// makes the station states durable, with a probe on the state sink's output.
pub fn predictions<'s>(
    windows: StreamVec<'s, u64, WindowFeatures>,
    mut models: Models,
    mut reload: Option<Subscriber>,
    metrics: Arc<Metrics>,
    locations: Locations,
    checkpointing: Option<(Checkpointing, ProbeHandle<u64>)>,
    limits: StationLimits,
) -> Predicted<'s> {
    // The probe is the state sink's frontier, watched to keep one snapshot in flight.
    let (checkpointing, state_durable) = checkpointing.unzip();
    let scope = windows.scope();
    let mut builder = OperatorBuilder::new("Predict".to_owned(), scope);
    let activator = scope.activator_for(builder.operator_info().address);
    let mut input = builder.new_input(windows, Pipeline);
    let (predictions_out, predictions) = builder.new_output::<Vec<Prediction>>();
    let (states_out, states) = builder.new_output::<Vec<StateRecord>>();
    let mut predictions_out = OutputBuilder::<_, CapacityContainerBuilder<Vec<Prediction>>>::from(predictions_out);
    let mut states_out = OutputBuilder::<_, CapacityContainerBuilder<Vec<StateRecord>>>::from(states_out);
    let mut book = Book::new(checkpointing.as_ref().map(|c| c.restored.clone()), limits);
    let mut logged_full = false;
    let mut rows: Vec<[f32; DETECTOR_DIMS]> = Vec::new();
    let mut scores: Vec<f32> = Vec::new();
    let mut versions = versions_of(&models);
    let mut last_snapshot = Instant::now();
    let mut logged_skips = false;
    builder.build(move |mut caps| {
        // The state output's capability stays at the time of the last snapshot; without
        // checkpointing it is dropped and the state stream stays empty.
        let mut state_cap: Option<Capability<u64>> = caps.pop().filter(|_| checkpointing.is_some());
        drop(caps);
        move |frontiers| {
            if let Some(r) = reload.as_mut()
                && let Some(new) = r.poll()
            {
                tracing::info!(
                    forecast = %new.forecast.version,
                    anomaly = %new.anomaly.version,
                    stations = book.len(),
                    "models reloaded; station state kept"
                );
                models = new;
                versions = versions_of(&models);
            }
            let (mut made, mut flagged) = (0u64, 0u64);
            let mut out = predictions_out.activate();
            input.for_each(|cap, data| {
                // One batch holds one window end, so at most one window per station: the
                // forest can score the whole batch before any station steps.
                rows.clear();
                let mut full = false;
                data.retain(|window| {
                    // New stations are created here, so the second pass finds every one.
                    let held = book.ensure(&window.station_id, window.window_end, &models);
                    full |= !held;
                    held
                });
                if full && !logged_full {
                    logged_full = true;
                    tracing::warn!(
                        stations = book.len(),
                        "the predictor holds twice its share of --max-stations; windows of new stations get no prediction until stations make way"
                    );
                }
                for window in data.iter() {
                    if let Some(held) = book.get(&window.station_id) {
                        rows.push(held.state.forest_input(&observation(window)));
                    }
                }
                scores.resize(rows.len(), 0.0);
                models.anomaly.model.forest.score_batch(&rows, &mut scores);
                let time = *cap.time();
                let mut session = out.session(&cap);
                for (window, &forest_score) in data.drain(..).zip(&scores) {
                    let obs = observation(&window);
                    let Some(state) = book.take_in(&window.station_id, window.window_end, &models) else {
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
                drop(session);
                // After the batch: every station in it has just been seen.
                book.expire(time);
            });
            drop(out);
            if made > 0 {
                metrics.add_predictions(made, flagged);
            }
            if book.skipped > 0 && !logged_skips {
                logged_skips = true;
                tracing::info!(
                    restored = book.taken,
                    "windows replayed from before a restored state's last window are not predicted again: the broker has those predictions"
                );
            }
            let (Some(cap), Some(cp)) = (state_cap.as_mut(), checkpointing.as_ref()) else {
                return;
            };
            // Every window before `covers` has been taken in.
            let frontier = frontiers[0].frontier();
            let covers = frontier.first().copied().unwrap_or(u64::MAX);
            if covers <= *cap.time() {
                return;
            }
            if book.has_changes() {
                let due = frontier.is_empty()
                    || last_snapshot.elapsed() >= cp.interval
                    || cp.stop.load(Ordering::Relaxed);
                // One snapshot in flight at a time: the previous one (sent at the time
                // the capability held before it moved to the current one) must be in
                // the broker. A snapshot holds every changed station, so with many
                // stations a slow broker would otherwise queue several of them.
                let previous_durable = state_durable.as_ref().is_none_or(|p| !p.less_than(cap.time()));
                if !due || !previous_durable {
                    // Come back when it is due (or soon after a stop is requested), or,
                    // when only the previous snapshot is missing, shortly.
                    let wait = if due {
                        IN_FLIGHT_POLL
                    } else {
                        cp.interval.saturating_sub(last_snapshot.elapsed())
                    };
                    activator.activate_after(wait.min(STOP_POLL));
                    return;
                }
                match book.snapshot() {
                    Ok(records) => {
                        metrics.add_state_records(records.len() as u64);
                        let mut out = states_out.activate();
                        out.session(&*cap).give_iterator(records.into_iter());
                    }
                    Err((station, e)) => {
                        // Not reachable for these types (see `StateEncodeError`); the
                        // book keeps its marks and the snapshot does not advance, so
                        // nothing claims this state durable.
                        tracing::error!(station, error = %e, "cannot checkpoint a station's state");
                        return;
                    }
                }
                last_snapshot = Instant::now();
            }
            if frontier.is_empty() {
                state_cap = None;
            } else {
                cap.downgrade(&covers);
            }
        }
    });
    Predicted { predictions, states }
}

/// How soon a predictor waiting for its next snapshot notices a stop.
const STOP_POLL: Duration = Duration::from_millis(200);
/// How often a due snapshot checks whether the previous one is in the broker.
const IN_FLIGHT_POLL: Duration = Duration::from_millis(10);
