//! The JSON bodies of the REST API beyond the wire records themselves, and the OpenAPI
//! document generated from them and from the routes' annotations.
//!
//! Records (`WindowFeatures`, `Prediction`) are served exactly as on Kafka, so a client
//! parses one schema whichever way it gets the data. The wrappers here add what a query
//! answer needs: which station, how many, and whether the limit cut it short.

use std::sync::Arc;

use serde::Serialize;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOf, OneOfBuilder, Schema, SchemaFormat, Type};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::schema::{MAX_EPOCH_MS, Prediction, WindowFeatures};

/// An error: every non-2xx JSON answer has this shape.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for a human.
    pub error: String,
}

/// Liveness.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` while the process serves.
    pub status: &'static str,
    /// `run` (the pipeline serves its own results) or `serve` (rebuilt from Kafka).
    pub role: &'static str,
}

/// Readiness.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Ready {
    /// `ready`.
    pub status: &'static str,
    /// The watermark (run) or the newest window end seen (serve), if any.
    #[schema(format = DateTime)]
    pub watermark: Option<String>,
    /// `run` only: the input has ended (file replay, `--events`) and every window has
    /// been emitted; the process still serves because of `--linger`.
    pub input_complete: bool,
}

/// The data credit a source requires (Open-Meteo: CC BY 4.0).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Attribution {
    /// Text to show.
    pub text: &'static str,
    /// Link for the text.
    pub url: &'static str,
    /// Licence name.
    pub license: &'static str,
    /// Licence link.
    pub license_url: &'static str,
}

/// The credit line for Open-Meteo data.
pub const OPEN_METEO: Attribution = Attribution {
    text: "Weather data by Open-Meteo.com",
    url: "https://open-meteo.com/",
    license: "CC BY 4.0",
    license_url: "https://creativecommons.org/licenses/by/4.0/",
};

/// One station's newest values.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct StationItem {
    /// The station.
    pub station_id: String,
    /// Its name, when the station catalogue (`--stations FILE`) lists it.
    pub name: Option<String>,
    /// Degrees north, from the catalogue.
    pub latitude: Option<f64>,
    /// Degrees east, from the catalogue.
    pub longitude: Option<f64>,
    /// Metres above sea level, from the catalogue.
    pub elevation: Option<f64>,
    /// End of its newest window; null when only predictions were seen.
    #[schema(format = DateTime)]
    pub window_end: Option<String>,
    /// Windows held in its history.
    pub windows: usize,
    /// Newest window's mean temperature, °C.
    pub temperature: Option<f64>,
    /// Newest window's mean relative humidity, %.
    pub humidity: Option<f64>,
    /// Newest window's mean pressure, hPa.
    pub pressure: Option<f64>,
    /// Newest window's mean wind speed, m/s.
    pub wind_speed: Option<f64>,
    /// Newest 1 h temperature forecast, °C.
    pub forecast_1h: Option<f64>,
    /// Newest anomaly score in [0, 1].
    pub anomaly_score: Option<f64>,
    /// Whether the newest window was flagged.
    pub is_anomaly: Option<bool>,
}

/// The station list.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct StationList {
    /// Stations known in total.
    pub count: usize,
    /// Stations in this answer (at most `limit`, sorted by id).
    pub returned: usize,
    /// Event time of history kept per station, seconds.
    pub history_seconds: u64,
    /// The credit to show with this data, when its source requires one.
    pub attribution: Option<Attribution>,
    /// The stations.
    pub stations: Vec<StationItem>,
}

/// A station's windows over a time range.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct FeaturesHistory {
    /// The station.
    pub station_id: String,
    /// Items returned.
    pub count: usize,
    /// More windows matched than `limit`; the oldest were left out.
    pub truncated: bool,
    /// Windows in ascending window end.
    pub items: Vec<WindowFeatures>,
}

/// A station's predictions over a time range.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PredictionsHistory {
    /// The station.
    pub station_id: String,
    /// Items returned.
    pub count: usize,
    /// More predictions matched than `limit`; the oldest were left out.
    pub truncated: bool,
    /// Predictions in ascending window end.
    pub items: Vec<Prediction>,
}

/// The newest anomalous predictions.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AnomalyFeed {
    /// Items returned.
    pub count: usize,
    /// Anomalous predictions, newest window end first.
    #[schema(value_type = Vec<Prediction>)]
    pub items: Vec<Arc<Prediction>>,
}

/// The schema of a time parameter: an RFC 3339 time or epoch milliseconds.
fn time_param() -> Schema {
    let one_of: OneOf = OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(0))
                .maximum(Some(MAX_EPOCH_MS as f64)),
        )
        .description(Some("An RFC 3339 time (2026-11-20T12:00:00Z) or epoch milliseconds"))
        .build();
    Schema::OneOf(one_of)
}

/// Query of the history routes.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the parameters; `query::Params` parses them
pub struct HistoryParams {
    /// Smallest window end, inclusive: RFC 3339 or epoch milliseconds.
    #[param(schema_with = time_param)]
    from: Option<String>,
    /// Largest window end, inclusive: RFC 3339 or epoch milliseconds.
    #[param(schema_with = time_param)]
    to: Option<String>,
    /// Most records returned (the newest of the range); default 1000.
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
}

/// Query of the anomaly feed.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the parameters; `query::Params` parses them
pub struct AnomalyParams {
    /// Only anomalies with a window end after this: RFC 3339 or epoch milliseconds.
    #[param(schema_with = time_param)]
    since: Option<String>,
    /// Most anomalies returned; default 100.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// Query of the station list.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // documents the parameters; `query::Params` parses them
pub struct StationParams {
    /// Most stations returned (sorted by id); default 1000.
    #[param(minimum = 1, maximum = 100000)]
    limit: Option<u32>,
}

/// The OpenAPI document, generated from the handlers' annotations in `routes`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "weatherflow",
        description = "Live weather features, forecasts and anomalies from the weatherflow dataflow."
    ),
    paths(
        super::routes::health,
        super::routes::ready,
        super::routes::stations,
        super::routes::latest_prediction,
        super::routes::prediction_history,
        super::routes::latest_features,
        super::routes::features_history,
        super::routes::anomalies,
        super::routes::metrics,
        super::routes::openapi,
        super::routes::dashboard,
    )
)]
pub struct ApiDoc;
