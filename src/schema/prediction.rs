//! The weather-predictions record: forecasts and the anomaly verdict for one window of one
//! station (docs/design.md §3).
//!
//! Numbers are rounded to 0.001 on the way out. The models compute in `f32`, whose exact
//! binary values would print as `12.399999618530273`; three decimals are well below any
//! forecast's accuracy and keep the records stable and readable.

use serde::{Deserialize, Serialize};

use super::features::rfc3339_ms;

/// One forecast with its 80 % interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ForecastRecord {
    /// Horizon, hours (1, 6 or 24).
    pub horizon_hours: u32,
    /// Predicted temperature, °C.
    pub temperature: f64,
    /// Lower bound of the 80 % interval, °C.
    pub lower: f64,
    /// Upper bound of the 80 % interval, °C.
    pub upper: f64,
}

/// The anomaly verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AnomalyRecord {
    /// Combined score in [0, 1].
    pub score: f64,
    /// Whether the score reached the flag threshold (0.5).
    pub is_anomaly: bool,
    /// Human-readable reasons, strongest first.
    pub reasons: Vec<String>,
}

/// The model versions behind a prediction. Shared strings: every prediction names them,
/// and cloning an `Arc` per record is cheaper than allocating two strings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelVersions {
    /// Forecast model version.
    #[schema(value_type = String)]
    pub forecast: std::sync::Arc<str>,
    /// Anomaly model version.
    #[schema(value_type = String)]
    pub anomaly: std::sync::Arc<str>,
}

/// One prediction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Prediction {
    /// The station.
    pub station_id: String,
    /// End of the window it was made at, epoch ms (RFC 3339 on the wire).
    #[serde(with = "rfc3339_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub window_end: u64,
    /// The window's mean temperature, °C: the forecasts' starting point.
    pub temperature: f64,
    /// Forecasts at 1, 6 and 24 h.
    #[schema(value_type = Vec<ForecastRecord>, min_items = 3, max_items = 3)]
    pub forecasts: [ForecastRecord; 3],
    /// `full`, or `short_history` while the station has less than 24 h of history.
    pub forecast_variant: String,
    /// The anomaly verdict for this window.
    pub anomaly: AnomalyRecord,
    /// Versions of the models that made it.
    pub models: ModelVersions,
}

/// Rounds to 0.001 for the wire.
pub fn round3(v: f32) -> f64 {
    (f64::from(v) * 1000.0).round() / 1000.0
}
