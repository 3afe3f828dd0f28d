//! The `train` and `evaluate` commands, as library functions the binary calls.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::MlError;
use super::anomaly::DETECTOR_NAMES;
use super::data::{self, StationData};
use super::evaluate::{Report, evaluate, evaluate_leave_one_out};
use super::features::NAMES;
use super::registry::{self, Kind, Metadata};
use super::train::{TrainParams, TrainStats, train};
use crate::schema::format_rfc3339;

/// What `train` did.
#[derive(Debug)]
pub struct TrainOutcome {
    /// Directory of the new forecast version.
    pub forecast_dir: PathBuf,
    /// Directory of the new anomaly version.
    pub anomaly_dir: PathBuf,
    /// Sample counts and training errors.
    pub stats: TrainStats,
    /// Leave-one-station-out evaluation, unless skipped.
    pub loso: Option<Report>,
}

fn describe(stations: &[StationData]) -> serde_json::Value {
    stations
        .iter()
        .map(|s| json!({"station_id": s.station_id, "path": s.path.display().to_string(), "rows": s.rows.len()}))
        .collect()
}

/// Trains on `data`, evaluates leave-one-station-out (forecasts on `data`, anomalies on
/// the `labelled` files when any match), and writes both kinds as new versions in `out`.
pub fn train_command(
    data_patterns: &[String],
    labelled_patterns: &[String],
    out: &Path,
    params: &TrainParams,
    loso: bool,
) -> Result<TrainOutcome, MlError> {
    let stations = data::load(data_patterns)?;
    tracing::info!(stations = stations.len(), "training");
    let trained = train(&stations, params)?;
    let loso_report = if loso {
        // The labelled copies carry the same stations with injected faults; evaluating
        // them leave-one-out gives forecast and anomaly figures for unseen stations at once.
        let labelled = data::load(labelled_patterns).unwrap_or_default();
        let eval_on = if labelled.is_empty() { &stations } else { &labelled };
        tracing::info!(stations = eval_on.len(), "leave-one-station-out evaluation");
        Some(evaluate_leave_one_out(eval_on, &stations, params)?)
    } else {
        None
    };
    let trained_at = format_rfc3339(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    );
    let metrics = json!({
        "leave_one_station_out": loso_report,
        "train": {
            "forecast_mae_by_horizon": trained.stats.forecast_train_mae,
            "samples_full": trained.stats.forecast_samples_full,
            "samples_short": trained.stats.forecast_samples_short,
            "forest_rows": trained.stats.forest_rows,
        },
    });
    let forecast_meta = Metadata {
        version: registry::next_version(out, Kind::Forecast)?,
        kind: Kind::Forecast.as_str().into(),
        trained_at: trained_at.clone(),
        data: describe(&stations),
        features: NAMES.iter().map(|s| s.to_string()).collect(),
        hyperparameters: json!({
            "model": "smartcore ridge regression on the temperature change, pooled, one per horizon and variant",
            "ridge_alpha": params.ridge_alpha,
            "online": params.online,
            "interval": params.interval,
        }),
        metrics: metrics.clone(),
    };
    let anomaly_meta = Metadata {
        version: registry::next_version(out, Kind::Anomaly)?,
        kind: Kind::Anomaly.as_str().into(),
        trained_at,
        data: describe(&stations),
        features: DETECTOR_NAMES.iter().map(|s| s.to_string()).collect(),
        hyperparameters: json!({
            "forest": params.forest,
            "rules": params.rules,
        }),
        metrics,
    };
    let forecast_dir = registry::save(out, Kind::Forecast, &trained.forecast, &forecast_meta)?;
    let anomaly_dir = registry::save(out, Kind::Anomaly, &trained.anomaly, &anomaly_meta)?;
    Ok(TrainOutcome {
        forecast_dir,
        anomaly_dir,
        stats: trained.stats,
        loso: loso_report,
    })
}

/// Evaluates the registry's LATEST models, or leave-one-station-out with models trained
/// on `train_patterns`.
pub fn evaluate_command(
    data_patterns: &[String],
    models_dir: &Path,
    leave_one_out: Option<&[String]>,
) -> Result<Report, MlError> {
    let stations = data::load(data_patterns)?;
    match leave_one_out {
        Some(train_patterns) => {
            let pool = data::load(train_patterns)?;
            evaluate_leave_one_out(&stations, &pool, &TrainParams::default())
        }
        None => Ok(evaluate(&stations, &registry::load_latest(models_dir)?)),
    }
}
