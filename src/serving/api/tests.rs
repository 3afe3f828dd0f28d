//! Every route in-process through `warp::test`: statuses, JSON shapes, each bad input, and
//! the OpenAPI document against the routing table.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;
use warp::http::StatusCode;

use super::model::OPEN_METEO;
use super::prom::Prom;
use super::routes::Route;
use super::{ApiState, ReadyInfo, Role, filter};
use crate::schema::MINUTE_MS;
use crate::serving::store::tests::{prediction, window};
use crate::serving::store::{Store, StoreConfig};

const T0: u64 = 1_795_176_060_000;

struct Fixture {
    state: ApiState,
    ready: Arc<AtomicBool>,
}

fn fixture(cors: &[&str]) -> Fixture {
    let store = Arc::new(Store::new(StoreConfig::default()));
    for m in 0..30 {
        let end = T0 + m * MINUTE_MS;
        store.insert_features([window("berlin", end, m as f64), window("odd id/ü", end, 1.0)]);
        store.insert_predictions([prediction("berlin", end, m % 10 == 0)]);
    }
    let ready = Arc::new(AtomicBool::new(true));
    let flag = ready.clone();
    let state = ApiState {
        prom: Arc::new(Prom::new(Some(store.clone()))),
        store,
        readiness: Arc::new(move || {
            if flag.load(Ordering::Relaxed) {
                Ok(ReadyInfo {
                    watermark: Some(T0),
                    input_complete: false,
                })
            } else {
                Err("warming up".into())
            }
        }),
        role: Role::Run,
        attribution: Some(OPEN_METEO),
        cors_origins: cors.iter().map(|s| s.to_string()).collect::<Vec<_>>().into(),
        catalogue: super::catalogue_index(Some(&[crate::stations::Station {
            id: "berlin".into(),
            name: "Berlin Tegel, Germany".into(),
            latitude: 52.5644,
            longitude: 13.3088,
            elevation: 36.0,
        }])),
    };
    Fixture { state, ready }
}

struct Answer {
    status: StatusCode,
    headers: warp::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
    fn error(&self) -> String {
        self.json()["error"].as_str().expect("error body").to_owned()
    }
}

fn call(state: &ApiState, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let mut request = warp::test::request().method(method).path(path);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = runtime.block_on(request.reply(&filter(state.clone())));
    Answer {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.body().to_vec(),
    }
}

fn get(state: &ApiState, path: &str) -> Answer {
    call(state, "GET", path, &[])
}

#[test]
fn routes_answer_with_their_shapes() {
    let Fixture { state, ready } = fixture(&[]);
    let a = get(&state, "/health");
    assert_eq!((a.status, a.json()["status"].as_str()), (StatusCode::OK, Some("ok")));
    let a = get(&state, "/ready");
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["watermark"], "2026-11-20T12:01:00Z");
    ready.store(false, Ordering::Relaxed);
    let a = get(&state, "/ready");
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(a.error().contains("warming up"));

    let a = get(&state, "/stations");
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["content-type"], "application/json");
    let v = a.json();
    assert_eq!((v["count"].as_u64(), v["returned"].as_u64()), (Some(2), Some(2)));
    assert_eq!(v["attribution"]["license"], "CC BY 4.0");
    let berlin = &v["stations"][0];
    assert_eq!(berlin["station_id"], "berlin");
    assert_eq!(berlin["temperature"], 29.0);
    assert_eq!(berlin["forecast_1h"], 10.0);
    assert_eq!(berlin["windows"], 30);
    assert_eq!(berlin["name"], "Berlin Tegel, Germany");
    assert_eq!(v["stations"][1]["name"], Value::Null);
    assert_eq!(v["stations"][1]["anomaly_score"], Value::Null);
    assert_eq!(get(&state, "/stations?limit=1").json()["returned"], 1);

    let p = get(&state, "/predictions/berlin").json();
    assert_eq!(p["window_end"], "2026-11-20T12:30:00Z");
    assert_eq!(p["forecasts"].as_array().map(Vec::len), Some(3));
    let f = get(&state, "/features/odd%20id%2F%C3%BC").json();
    assert_eq!(f["station_id"], "odd id/ü");

    let h = get(&state, "/features/berlin/history?limit=5").json();
    assert_eq!((h["count"].as_u64(), h["truncated"].as_bool()), (Some(5), Some(true)));
    assert_eq!(h["items"][4]["window_end"], "2026-11-20T12:30:00Z");
    let h = get(
        &state,
        "/predictions/berlin/history?from=2026-11-20T12:05:00Z&to=1795176600000",
    )
    .json();
    let ends: Vec<&str> = h["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["window_end"].as_str().unwrap())
        .collect();
    assert_eq!(ends.first(), Some(&"2026-11-20T12:05:00Z"));
    assert_eq!(ends.last(), Some(&"2026-11-20T12:10:00Z"));
    assert_eq!(h["truncated"], false);

    let feed = get(&state, "/anomalies").json();
    assert_eq!(feed["count"], 3);
    assert_eq!(feed["items"][0]["window_end"], "2026-11-20T12:21:00Z");
    let feed = get(&state, "/anomalies?since=2026-11-20T12:11:00Z&limit=1").json();
    assert_eq!(feed["items"][0]["window_end"], "2026-11-20T12:21:00Z");
    assert_eq!(feed["count"], 1);

    let a = get(&state, "/");
    assert!(a.headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(String::from_utf8_lossy(&a.body).contains("data-state"));

    let a = get(&state, "/metrics");
    let text = String::from_utf8(a.body).unwrap();
    assert!(text.contains("weatherflow_store_stations 2"), "{text}");
    assert!(text.contains(r#"weatherflow_http_request_duration_seconds_count{route="stations"}"#));
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn bad_input_is_a_4xx_with_a_json_error() {
    let Fixture { state, .. } = fixture(&[]);
    let long = "a".repeat(65);
    for (path, status, needle) in [
        ("/predictions/nowhere", StatusCode::NOT_FOUND, "unknown station"),
        ("/features/nowhere/history", StatusCode::NOT_FOUND, "unknown station"),
        ("/nope", StatusCode::NOT_FOUND, "no route"),
        ("/health/", StatusCode::NOT_FOUND, "no route"),
        ("/predictions/berlin/history/x", StatusCode::NOT_FOUND, "no route"),
        (&format!("/features/{long}"), StatusCode::BAD_REQUEST, "65 bytes"),
        ("/features/%FF", StatusCode::BAD_REQUEST, "UTF-8"),
        ("/predictions//history", StatusCode::BAD_REQUEST, "empty"),
        ("/features/berlin/history?from=noon", StatusCode::BAD_REQUEST, "from"),
        ("/features/berlin/history?limit=0", StatusCode::BAD_REQUEST, "limit"),
        ("/features/berlin/history?limit=10001", StatusCode::BAD_REQUEST, "limit"),
        ("/features/berlin/history?limit=x", StatusCode::BAD_REQUEST, "limit"),
        ("/features/berlin/history?lmit=3", StatusCode::BAD_REQUEST, "lmit"),
        (
            "/features/berlin/history?limit=1&limit=2",
            StatusCode::BAD_REQUEST,
            "twice",
        ),
        ("/anomalies?since=-1", StatusCode::BAD_REQUEST, "since"),
        ("/anomalies?limit=1001", StatusCode::BAD_REQUEST, "limit"),
        ("/stations?limit=100001", StatusCode::BAD_REQUEST, "limit"),
    ] {
        let a = get(&state, path);
        assert_eq!(a.status, status, "{path}");
        assert!(a.error().contains(needle), "{path}: {}", a.error());
    }
    // A range that ends before it starts holds nothing.
    let a = get(
        &state,
        "/predictions/berlin/history?from=2026-11-21T00:00:00Z&to=2026-11-20T00:00:00Z",
    );
    assert_eq!((a.status, a.json()["count"].as_u64()), (StatusCode::OK, Some(0)));
    // Berlin is known but the other station has no predictions: a 404 that says so.
    let a = get(&state, "/predictions/odd%20id%2F%C3%BC");
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(a.error().contains("no predictions yet"), "{}", a.error());

    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let a = call(&state, method, "/stations", &[]);
        assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(a.headers["allow"], "GET, HEAD, OPTIONS");
        assert!(a.error().contains(method));
    }
    let a = call(&state, "POST", "/nope", &[]);
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = call(&state, "POST", "/stations", &[("content-length", "1000000")]);
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(a.error().contains("too large"));
    let a = call(&state, "OPTIONS", "/stations", &[]);
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = call(&state, "HEAD", "/health", &[]);
    assert_eq!(a.status, StatusCode::OK);
}

#[test]
fn cors_is_off_unless_an_origin_is_allowed() {
    let origin = [("origin", "https://example.org")];
    let off = fixture(&[]).state;
    let a = call(&off, "GET", "/stations", &origin);
    assert!(!a.headers.contains_key("access-control-allow-origin"));
    let on = fixture(&["https://example.org"]).state;
    let a = call(&on, "GET", "/stations", &origin);
    assert_eq!(a.headers["access-control-allow-origin"], "https://example.org");
    let a = call(&on, "GET", "/stations", &[("origin", "https://evil.example")]);
    assert!(!a.headers.contains_key("access-control-allow-origin"));
    let preflight = [
        ("origin", "https://example.org"),
        ("access-control-request-method", "GET"),
    ];
    let a = call(&on, "OPTIONS", "/predictions/berlin", &preflight);
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(a.headers["access-control-allow-methods"], "GET, HEAD, OPTIONS");
    let any = fixture(&["*"]).state;
    assert_eq!(
        call(&any, "GET", "/health", &origin).headers["access-control-allow-origin"],
        "*"
    );
}

#[test]
fn the_openapi_document_lists_exactly_the_routes() {
    let Fixture { state, .. } = fixture(&[]);
    let doc = get(&state, "/openapi.json").json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let routed: BTreeSet<String> = Route::ALL.iter().map(|r| r.template().to_owned()).collect();
    assert_eq!(documented, routed);
    for route in Route::ALL {
        let op = &doc["paths"][route.template()]["get"];
        assert!(op.is_object(), "{} has no GET", route.template());
        // Every route the router matches is reachable with its template filled in.
        let path = route.template().replace("{station_id}", "berlin");
        assert!(Route::of(&path).is_some_and(|(r, _)| r == route), "{path}");
        let status = get(&state, &path).status;
        assert!(status.is_success(), "{path}: {status}");
        let documented_ok = &op["responses"]["200"];
        assert!(documented_ok.is_object(), "{path}: 200 not documented");
        // Routes that can answer 400 or 404 document it.
        if route.template().contains("{station_id}") {
            assert!(op["responses"]["404"].is_object(), "{path}: 404 not documented");
            assert!(op["responses"]["400"].is_object(), "{path}: 400 not documented");
        }
    }
    for schema in [
        "Prediction",
        "WindowFeatures",
        "ErrorBody",
        "StationList",
        "AnomalyFeed",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema} missing");
    }
}
