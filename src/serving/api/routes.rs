//! Routing and the handlers of docs/design.md §7.
//!
//! One warp filter hands every request here as plain values; [`handle`] matches the path
//! against [`Route`] and answers synchronously. Routing by hand instead of composing one
//! warp filter per route keeps three promises simple and testable in one place: an unknown
//! path is a 404 and a known path with the wrong method a 405 (warp's rejection ranking
//! blurs the two), every error is the same JSON shape, and each answer carries the route
//! label its latency is recorded under. Handlers never await, so no lock can be held
//! across an await, and each reads the store only long enough to clone what it returns.

use std::sync::OnceLock;

use bytes::Bytes;
use serde::Serialize;
use warp::http::{HeaderValue, Method, StatusCode, header};
use warp::reply::Response;

use super::ApiState;
use super::model::{
    AnomalyFeed, AnomalyParams, ApiDoc, ErrorBody, FeaturesHistory, Health, HistoryParams, PredictionsHistory, Ready,
    StationItem, StationList, StationParams,
};
use super::query::{BadRequest, Params, station_id};
use crate::schema::{Prediction, WindowFeatures, format_rfc3339};
use crate::serving::store::{Missing, Range};

/// Largest request body accepted: none of the routes takes one.
pub const MAX_BODY_BYTES: u64 = 16 * 1024;
const HISTORY_DEFAULT: usize = 1000;
const HISTORY_MAX: usize = 10_000;
const ANOMALIES_DEFAULT: usize = 100;
const ANOMALIES_MAX: usize = 1000;
const STATIONS_DEFAULT: usize = 1000;
const STATIONS_MAX: usize = 100_000;
/// Methods every route answers.
pub const ALLOW: &str = "GET, HEAD, OPTIONS";

/// The routes, for matching, metrics labels and the OpenAPI coverage test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `GET /`
    Dashboard,
    /// `GET /health`
    Health,
    /// `GET /ready`
    Ready,
    /// `GET /stations`
    Stations,
    /// `GET /predictions/{station_id}`
    Prediction,
    /// `GET /predictions/{station_id}/history`
    PredictionHistory,
    /// `GET /features/{station_id}`
    Features,
    /// `GET /features/{station_id}/history`
    FeaturesHistory,
    /// `GET /anomalies`
    Anomalies,
    /// `GET /metrics`
    Metrics,
    /// `GET /openapi.json`
    OpenApi,
}

impl Route {
    /// Every route.
    pub const ALL: [Route; 11] = [
        Route::Dashboard,
        Route::Health,
        Route::Ready,
        Route::Stations,
        Route::Prediction,
        Route::PredictionHistory,
        Route::Features,
        Route::FeaturesHistory,
        Route::Anomalies,
        Route::Metrics,
        Route::OpenApi,
    ];

    /// The path template, as in the OpenAPI document.
    pub fn template(self) -> &'static str {
        match self {
            Route::Dashboard => "/",
            Route::Health => "/health",
            Route::Ready => "/ready",
            Route::Stations => "/stations",
            Route::Prediction => "/predictions/{station_id}",
            Route::PredictionHistory => "/predictions/{station_id}/history",
            Route::Features => "/features/{station_id}",
            Route::FeaturesHistory => "/features/{station_id}/history",
            Route::Anomalies => "/anomalies",
            Route::Metrics => "/metrics",
            Route::OpenApi => "/openapi.json",
        }
    }

    /// The `route` label of the latency histogram: bounded, never a station id.
    pub fn label(self) -> &'static str {
        match self {
            Route::Dashboard => "dashboard",
            Route::Health => "health",
            Route::Ready => "ready",
            Route::Stations => "stations",
            Route::Prediction => "prediction",
            Route::PredictionHistory => "prediction_history",
            Route::Features => "features",
            Route::FeaturesHistory => "features_history",
            Route::Anomalies => "anomalies",
            Route::Metrics => "metrics",
            Route::OpenApi => "openapi",
        }
    }

    /// Matches a raw (still percent-encoded) path; the station segment is returned raw.
    pub fn of(path: &str) -> Option<(Route, Option<&str>)> {
        let rest = path.strip_prefix('/')?;
        let mut parts = rest.split('/');
        let first = parts.next()?;
        let second = parts.next();
        let third = parts.next();
        if parts.next().is_some() {
            return None;
        }
        let route = match (first, second, third) {
            ("", None, None) => Route::Dashboard,
            ("health", None, None) => Route::Health,
            ("ready", None, None) => Route::Ready,
            ("stations", None, None) => Route::Stations,
            ("anomalies", None, None) => Route::Anomalies,
            ("metrics", None, None) => Route::Metrics,
            ("openapi.json", None, None) => Route::OpenApi,
            ("predictions", Some(id), None) => return Some((Route::Prediction, Some(id))),
            ("predictions", Some(id), Some("history")) => return Some((Route::PredictionHistory, Some(id))),
            ("features", Some(id), None) => return Some((Route::Features, Some(id))),
            ("features", Some(id), Some("history")) => return Some((Route::FeaturesHistory, Some(id))),
            _ => return None,
        };
        Some((route, None))
    }
}

/// One request, as plain values.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The method.
    pub method: &'a Method,
    /// The raw path.
    pub path: &'a str,
    /// The raw query string, without `?`; empty when absent.
    pub query: &'a str,
    /// The declared body length, if any.
    pub content_length: Option<u64>,
}

/// Builds a response with a body and content type.
pub fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A JSON answer. Our bodies hold only strings, numbers and sequences, which
/// `serde_json` always serialises; the 500 branch exists only so a bug cannot panic.
pub fn json(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            let mut r = respond(status, "application/json", bytes.into());
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot serialise a response");
            respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                "application/json",
                Bytes::from_static(br#"{"error":"internal error"}"#),
            )
        }
    }
}

/// `{"error": message}` with `status`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    json(status, &ErrorBody { error: message.into() })
}

fn missing(what: Missing, id: &str, kind: &str) -> Response {
    match what {
        Missing::Station => error(StatusCode::NOT_FOUND, format!("unknown station {id:?}")),
        Missing::Record => error(StatusCode::NOT_FOUND, format!("station {id:?} has no {kind} yet")),
    }
}

fn bad_request(e: BadRequest) -> Response {
    error(StatusCode::BAD_REQUEST, e.0)
}

/// Answers one request; returns the route it matched (`None` for no route) with the
/// response.
pub fn handle(state: &ApiState, req: Request<'_>) -> (Option<Route>, Response) {
    if req.content_length.is_some_and(|n| n > MAX_BODY_BYTES) {
        let message = format!("request body too large: this API takes no body (limit {MAX_BODY_BYTES} bytes)");
        return (None, error(StatusCode::PAYLOAD_TOO_LARGE, message));
    }
    let Some((route, raw_id)) = Route::of(req.path) else {
        let message = format!(
            "no route {} {}; the routes are listed at /openapi.json",
            req.method, req.path
        );
        return (None, error(StatusCode::NOT_FOUND, message));
    };
    if *req.method == Method::OPTIONS {
        let mut r = respond(StatusCode::NO_CONTENT, "text/plain", Bytes::new());
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(ALLOW));
        return (Some(route), r);
    }
    if *req.method != Method::GET && *req.method != Method::HEAD {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not allowed on {}; use GET", req.method, route.template()),
        );
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(ALLOW));
        return (Some(route), r);
    }
    let id = match raw_id.map(station_id).transpose() {
        Ok(id) => id.unwrap_or_default(),
        Err(e) => return (Some(route), bad_request(e)),
    };
    let response = match route {
        Route::Dashboard => dashboard(),
        Route::Health => health(state),
        Route::Ready => ready(state),
        Route::Metrics => metrics(state),
        Route::OpenApi => openapi(),
        Route::Stations => stations(state, req.query),
        Route::Prediction => latest_prediction(state, &id),
        Route::Features => latest_features(state, &id),
        Route::PredictionHistory => prediction_history(state, &id, req.query),
        Route::FeaturesHistory => features_history(state, &id, req.query),
        Route::Anomalies => anomalies(state, req.query),
    };
    (Some(route), response)
}

/// The dashboard: one self-contained page.
#[utoipa::path(get, path = "/", tag = "dashboard",
    responses((status = 200, description = "The live dashboard", content_type = "text/html")))]
pub fn dashboard() -> Response {
    let mut r = respond(
        StatusCode::OK,
        "text/html; charset=utf-8",
        Bytes::from_static(include_str!("dashboard.html").as_bytes()),
    );
    // The page talks only to its own origin and loads nothing from elsewhere.
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
        ),
    );
    r
}

/// Liveness: 200 while the process serves.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, body = Health)))]
pub fn health(state: &ApiState) -> Response {
    json(
        StatusCode::OK,
        &Health {
            status: "ok",
            role: state.role.as_str(),
        },
    )
}

/// Readiness: 503 until the sources are connected and the watermark has moved (run), or
/// until the store has caught up with the topics (serve).
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses((status = 200, body = Ready), (status = 503, body = ErrorBody)))]
pub fn ready(state: &ApiState) -> Response {
    match (state.readiness)() {
        Ok(info) => json(
            StatusCode::OK,
            &Ready {
                status: "ready",
                watermark: info.watermark.map(format_rfc3339),
                input_complete: info.input_complete,
            },
        ),
        Err(why) => error(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}")),
    }
}

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "OpenMetrics text", content_type = "application/openmetrics-text")))]
pub fn metrics(state: &ApiState) -> Response {
    respond(
        StatusCode::OK,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        state.prom.render().into(),
    )
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
pub fn openapi() -> Response {
    static DOC: OnceLock<Bytes> = OnceLock::new();
    let doc = DOC.get_or_init(|| {
        use utoipa::OpenApi as _;
        // The document is built from static annotations; if that ever failed it would
        // fail in every test, so an empty object here is unreachable in a release.
        ApiDoc::openapi().to_json().unwrap_or_else(|_| "{}".into()).into()
    });
    respond(StatusCode::OK, "application/json", doc.clone())
}

fn item(state: &ApiState, summary: &crate::serving::store::StationSummary) -> StationItem {
    let f = summary.features.as_ref();
    let p = summary.prediction.as_ref();
    let mean = |i: usize| f.and_then(|f| f.mean(i));
    let entry = state.catalogue.get(&*summary.station_id);
    StationItem {
        station_id: summary.station_id.to_string(),
        name: entry.map(|e| e.name.clone()),
        latitude: entry.map(|e| e.latitude),
        longitude: entry.map(|e| e.longitude),
        elevation: entry.map(|e| e.elevation),
        window_end: f.map(|f| format_rfc3339(f.end())),
        windows: summary.windows,
        temperature: mean(0),
        humidity: mean(1),
        pressure: mean(2),
        wind_speed: mean(3),
        forecast_1h: p.map(|p| p.first_forecast()),
        anomaly_score: p.map(|p| p.anomaly().0),
        is_anomaly: p.map(|p| p.anomaly().1),
    }
}

/// Every station with its newest values, sorted by id.
#[utoipa::path(get, path = "/stations", tag = "stations", params(StationParams),
    responses((status = 200, body = StationList), (status = 400, body = ErrorBody)))]
pub fn stations(state: &ApiState, query: &str) -> Response {
    let limit = match Params::parse(query, &["limit"]).and_then(|p| p.limit("limit", STATIONS_DEFAULT, STATIONS_MAX)) {
        Ok(limit) => limit,
        Err(e) => return bad_request(e),
    };
    let (count, summaries) = state.store.stations(limit);
    let stations: Vec<StationItem> = summaries.iter().map(|s| item(state, s)).collect();
    json(
        StatusCode::OK,
        &StationList {
            count,
            returned: stations.len(),
            history_seconds: state.store.config().history_ms / 1000,
            attribution: state.attribution.clone(),
            stations,
        },
    )
}

/// The newest prediction of a station.
#[utoipa::path(get, path = "/predictions/{station_id}", tag = "predictions",
    params(("station_id" = String, Path, description = "Station id: 1–64 bytes of UTF-8 (64 ASCII characters), percent-encoded", example = "st-00000", min_length = 1, max_length = 64)),
    responses((status = 200, body = Prediction), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub fn latest_prediction(state: &ApiState, id: &str) -> Response {
    match state.store.latest_prediction(id) {
        Ok(p) => json(StatusCode::OK, &p),
        Err(m) => missing(m, id, "predictions"),
    }
}

/// The newest window of a station.
#[utoipa::path(get, path = "/features/{station_id}", tag = "features",
    params(("station_id" = String, Path, description = "Station id: 1–64 bytes of UTF-8 (64 ASCII characters), percent-encoded", example = "st-00000", min_length = 1, max_length = 64)),
    responses((status = 200, body = WindowFeatures), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub fn latest_features(state: &ApiState, id: &str) -> Response {
    match state.store.latest_features(id) {
        Ok(f) => json(StatusCode::OK, &f),
        Err(m) => missing(m, id, "windows"),
    }
}

/// The range of a history query. `from` after `to` is an empty range, not an error: it
/// is a well-formed question whose answer is "nothing".
fn range(query: &str) -> Result<Range, BadRequest> {
    let p = Params::parse(query, &["from", "to", "limit"])?;
    Ok(Range {
        from: p.time("from")?,
        to: p.time("to")?,
        limit: p.limit("limit", HISTORY_DEFAULT, HISTORY_MAX)?,
    })
}

/// A station's predictions with window end in [from, to], the newest `limit`, ascending.
#[utoipa::path(get, path = "/predictions/{station_id}/history", tag = "predictions",
    params(("station_id" = String, Path, description = "Station id: 1–64 bytes of UTF-8 (64 ASCII characters), percent-encoded", example = "st-00000", min_length = 1, max_length = 64), HistoryParams),
    responses((status = 200, body = PredictionsHistory), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub fn prediction_history(state: &ApiState, id: &str, query: &str) -> Response {
    let range = match range(query) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    match state.store.predictions_history(id, &range) {
        Ok(h) => json(
            StatusCode::OK,
            &PredictionsHistory {
                station_id: id.to_owned(),
                count: h.items.len(),
                truncated: h.truncated,
                items: h.items,
            },
        ),
        Err(m) => missing(m, id, "predictions"),
    }
}

/// A station's windows with window end in [from, to], the newest `limit`, ascending.
#[utoipa::path(get, path = "/features/{station_id}/history", tag = "features",
    params(("station_id" = String, Path, description = "Station id: 1–64 bytes of UTF-8 (64 ASCII characters), percent-encoded", example = "st-00000", min_length = 1, max_length = 64), HistoryParams),
    responses((status = 200, body = FeaturesHistory), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub fn features_history(state: &ApiState, id: &str, query: &str) -> Response {
    let range = match range(query) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    match state.store.features_history(id, &range) {
        Ok(h) => json(
            StatusCode::OK,
            &FeaturesHistory {
                station_id: id.to_owned(),
                count: h.items.len(),
                truncated: h.truncated,
                items: h.items,
            },
        ),
        Err(m) => missing(m, id, "windows"),
    }
}

/// The newest anomalous predictions, newest first.
#[utoipa::path(get, path = "/anomalies", tag = "predictions", params(AnomalyParams),
    responses((status = 200, body = AnomalyFeed), (status = 400, body = ErrorBody)))]
pub fn anomalies(state: &ApiState, query: &str) -> Response {
    let parsed = Params::parse(query, &["since", "limit"])
        .and_then(|p| Ok((p.time("since")?, p.limit("limit", ANOMALIES_DEFAULT, ANOMALIES_MAX)?)));
    let (since, limit) = match parsed {
        Ok(q) => q,
        Err(e) => return bad_request(e),
    };
    let items = state.store.anomalies(since, limit);
    json(
        StatusCode::OK,
        &AnomalyFeed {
            count: items.len(),
            items,
        },
    )
}
