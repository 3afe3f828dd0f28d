//! The operations endpoints of a process that serves no data: `/health` and `/metrics`
//! (used by `produce --api`). Same JSON errors and latency histogram as the REST API.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use warp::Filter;
use warp::http::{HeaderValue, Method, StatusCode, header};
use warp::reply::Response;

use super::model::Health;
use super::prom::Prom;
use super::routes::{ALLOW, error, json, respond};

/// `/health` (role `role`) and `/metrics` from `prom`; anything else is a JSON 404/405.
pub fn filter(
    prom: Arc<Prom>,
    role: &'static str,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    warp::method()
        .and(warp::path::full())
        .map(move |method: Method, path: warp::path::FullPath| {
            let started = Instant::now();
            let (label, response) = answer(&prom, role, &method, path.as_str());
            prom.observe(label, started.elapsed());
            response
        })
}

fn answer(prom: &Prom, role: &'static str, method: &Method, path: &str) -> (&'static str, Response) {
    let label = match path {
        "/health" => "health",
        "/metrics" => "metrics",
        _ => {
            let message = format!("no route {method} {path}; this process serves /health and /metrics");
            return ("unmatched", error(StatusCode::NOT_FOUND, message));
        }
    };
    if *method != Method::GET && *method != Method::HEAD {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{method} is not allowed on {path}; use GET"),
        );
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(ALLOW));
        return (label, r);
    }
    let response = match label {
        "health" => json(StatusCode::OK, &Health { status: "ok", role }),
        _ => respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            prom.render().into(),
        ),
    };
    (label, response)
}
