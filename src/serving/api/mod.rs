//! The REST API, dashboard and metrics endpoint (docs/design.md §7), served by warp.
//!
//! [`ApiServer::start`] binds the address at once, so a port in use fails the command
//! before any work starts, then serves on its own thread with a single-threaded tokio
//! runtime. The dataflow's workers never run API code, and the API never runs dataflow
//! code: the two meet only in the [`Store`](crate::serving::store::Store)'s short locks.
//!
//! - [`routes`]: routing and handlers (synchronous; they never await).
//! - [`query`]: strict parsing of query strings and station ids.
//! - [`model`]: response bodies and the generated OpenAPI document.
//! - [`prom`]: the Prometheus registry.

pub mod model;
pub mod ops;
pub mod prom;
pub mod query;
pub mod routes;
#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use warp::Filter;
use warp::http::{HeaderValue, Method, header};
use warp::reply::Response;

use std::collections::HashMap;

use crate::serving::store::Store;
use crate::stations::Station;
use model::Attribution;
use prom::Prom;
use routes::{ALLOW, Request};

/// How long a stopping server waits for open connections before dropping them. Browsers
/// keep idle connections open, and warp's graceful shutdown would wait for them forever.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The address could not be bound.
    #[error("cannot listen on {addr} (choose another with --api ADDR, or turn the API off with --no-api)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The runtime or its thread could not be created.
    #[error("cannot start the API thread")]
    Thread(#[source] std::io::Error),
}

/// Which process serves: the pipeline itself, or `weatherflow serve`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `weatherflow run`.
    Run,
    /// `weatherflow serve`.
    Serve,
}

impl Role {
    /// The name in `/health`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Run => "run",
            Role::Serve => "serve",
        }
    }
}

/// What `/ready` reports when ready.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadyInfo {
    /// The watermark (run) or newest window end (serve), epoch ms.
    pub watermark: Option<u64>,
    /// The run's input has ended and every window has been emitted (`--linger`).
    pub input_complete: bool,
}

/// Readiness: `Ok(info)` when ready, `Err(why not)` otherwise.
pub type Readiness = Arc<dyn Fn() -> Result<ReadyInfo, String> + Send + Sync>;

/// Everything a request may read.
#[derive(Clone)]
pub struct ApiState {
    /// The results.
    pub store: Arc<Store>,
    /// The metrics registry.
    pub prom: Arc<Prom>,
    /// Whether the process is ready.
    pub readiness: Readiness,
    /// `run` or `serve`.
    pub role: Role,
    /// The data credit to show, when the source needs one.
    pub attribution: Option<Attribution>,
    /// Origins allowed by CORS; empty turns CORS off. `*` allows any.
    pub cors_origins: Arc<[String]>,
    /// Catalogue entries by station id: names and coordinates for `/stations`.
    pub catalogue: Arc<HashMap<String, Station>>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState")
            .field("role", &self.role)
            .field("cors_origins", &self.cors_origins)
            .finish_non_exhaustive()
    }
}

/// A catalogue keyed by station id, for [`ApiState::catalogue`].
pub fn catalogue_index(catalogue: Option<&[Station]>) -> Arc<HashMap<String, Station>> {
    Arc::new(
        catalogue
            .unwrap_or_default()
            .iter()
            .map(|s| (s.id.clone(), s.clone()))
            .collect(),
    )
}

impl ApiState {
    /// Adds the CORS headers when the request's origin is allowed; answers a preflight.
    fn cors(&self, origin: Option<&str>, response: &mut Response) {
        let Some(origin) = origin else { return };
        if self.cors_origins.is_empty() {
            return;
        }
        let any = self.cors_origins.iter().any(|o| o == "*");
        if !any && !self.cors_origins.iter().any(|o| o == origin) {
            return;
        }
        let value = if any {
            Ok(HeaderValue::from_static("*"))
        } else {
            HeaderValue::from_str(origin)
        };
        if let Ok(value) = value {
            let headers = response.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
            headers.insert(header::VARY, HeaderValue::from_static("origin"));
            headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOW));
            headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        }
    }
}

/// The warp filter answering every request. Public for `warp::test`.
pub fn filter(
    state: ApiState,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static {
    warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .map(
            move |method: Method, path: warp::path::FullPath, query: String, headers: warp::http::HeaderMap| {
                let started = Instant::now();
                let content_length = headers
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                let request = Request {
                    method: &method,
                    path: path.as_str(),
                    query: &query,
                    content_length,
                };
                let (route, mut response) = routes::handle(&state, request);
                let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
                state.cors(origin, &mut response);
                state
                    .prom
                    .observe(route.map_or("unmatched", |r| r.label()), started.elapsed());
                response
            },
        )
}

/// A running API server; stops when dropped.
#[derive(Debug)]
pub struct ApiServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl ApiServer {
    /// Binds `addr` and serves `state` on a new thread.
    pub fn start(addr: SocketAddr, state: ApiState) -> Result<ApiServer, ApiError> {
        Self::serve(addr, filter(state))
    }

    /// Binds `addr` and serves `routes` on a new thread.
    pub fn serve<F>(addr: SocketAddr, routes: F) -> Result<ApiServer, ApiError>
    where
        F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
    {
        let bind = |source| ApiError::Bind { addr, source };
        let listener = std::net::TcpListener::bind(addr).map_err(bind)?;
        listener.set_nonblocking(true).map_err(bind)?;
        let local = listener.local_addr().map_err(bind)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ApiError::Thread)?;
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let mut graceful = stopped.clone();
        let thread = std::thread::Builder::new()
            .name("api".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!(error = %e, "the API cannot use its socket; not serving");
                            return;
                        }
                    };
                    let server = warp::serve(routes)
                        .incoming(listener)
                        .graceful(async move {
                            let _ = graceful.wait_for(|s| *s).await;
                        })
                        .run();
                    tokio::pin!(server);
                    tokio::select! {
                        () = &mut server => return,
                        _ = stopped.wait_for(|s| *s) => {}
                    }
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, server).await;
                });
                // Dropping the runtime cancels connections still open after the grace.
                drop(runtime);
            })
            .map_err(ApiError::Thread)?;
        tracing::info!(url = %format!("http://{local}/"), "API and dashboard listening");
        Ok(ApiServer {
            addr: local,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The bound address (the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets open requests finish (bounded), and joins the thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the API thread panicked");
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}
