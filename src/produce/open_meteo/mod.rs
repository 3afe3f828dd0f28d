//! Live readings from the Open-Meteo forecast API's `current` conditions.
//!
//! One request per cycle asks for every station of the catalogue at once (each location
//! still counts against the free tier's daily budget, so a 15-minute interval for 20
//! stations spends 1,920 of its 10,000 calls a day). The pieces:
//!
//! - [`Client`]: builds the request and performs it (reqwest, rustls), turning every way a
//!   request can end into a [`Fetch`] value; it never panics and never retries by itself.
//! - [`Poller`]: decides what a fetch means: which readings to publish (new ones only,
//!   keyed by (station, `current.time`)), when to ask next ([`policy`]), and what to count.
//!   It takes the current time as an argument, so tests drive the clock.
//! - [`parse`]: the response format.

pub mod parse;
pub mod policy;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use crate::schema::{format_rfc3339, parse_json};
use crate::stations::Station;
use parse::{Current, ParseError};
use policy::{Jitter, Limit};

/// The variables asked for, in the units of docs/design.md §3.
const CURRENT: &str =
    "temperature_2m,relative_humidity_2m,surface_pressure,wind_speed_10m,wind_direction_10m,precipitation";

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The TLS backend or HTTP client could not be set up.
    #[error("cannot create the HTTP client")]
    Build(#[source] reqwest::Error),
}

/// How one request ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Fetch {
    /// 200 with a body that matches the request.
    Ok(Vec<Current>),
    /// A non-200 status, with Open-Meteo's `reason` when the body had one.
    Status {
        /// The HTTP status.
        code: u16,
        /// The error body's reason.
        reason: Option<String>,
    },
    /// No complete answer within the timeout.
    Timeout,
    /// The connection failed (refused, reset, DNS, TLS).
    Transport(String),
    /// 200, but the body does not match the request.
    Malformed(ParseError),
}

impl Fetch {
    /// The `status` label of `weatherflow_upstream_requests_total`.
    pub fn label(&self) -> String {
        match self {
            Fetch::Ok(_) => "200".into(),
            Fetch::Status { code, .. } => code.to_string(),
            Fetch::Timeout => "timeout".into(),
            Fetch::Transport(_) => "error".into(),
            Fetch::Malformed(_) => "malformed".into(),
        }
    }
}

/// The HTTP side.
#[derive(Debug)]
pub struct Client {
    http: reqwest::blocking::Client,
    url: String,
    locations: usize,
}

impl Client {
    /// A client asking `base` (e.g. `https://api.open-meteo.com`) for `stations`.
    pub fn new(base: &str, stations: &[Station], timeout: Duration) -> Result<Client, ClientError> {
        let http = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("weatherflow/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(ClientError::Build)?;
        Ok(Client {
            http,
            url: request_url(base, stations),
            locations: stations.len(),
        })
    }

    /// The request URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Performs one request.
    pub fn fetch(&self) -> Fetch {
        let response = match self.http.get(&self.url).send() {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Fetch::Timeout,
            Err(e) => return Fetch::Transport(crate::error::chain(&e)),
        };
        let code = response.status().as_u16();
        let body = match response.bytes() {
            Ok(b) => b,
            Err(e) if e.is_timeout() => return Fetch::Timeout,
            Err(e) => return Fetch::Transport(crate::error::chain(&e)),
        };
        if code != 200 {
            return Fetch::Status {
                code,
                reason: parse::error_reason(&body),
            };
        }
        match parse::parse(&body, self.locations) {
            Ok(current) => Fetch::Ok(current),
            Err(e) => Fetch::Malformed(e),
        }
    }
}

/// The request for `stations`, coordinates in catalogue order.
pub fn request_url(base: &str, stations: &[Station]) -> String {
    let join = |f: fn(&Station) -> f64| {
        stations
            .iter()
            .map(|s| format!("{}", f(s)))
            .collect::<Vec<_>>()
            .join(",")
    };
    format!(
        "{}/v1/forecast?latitude={}&longitude={}&current={CURRENT}&timeformat=unixtime&wind_speed_unit=ms",
        base.trim_end_matches('/'),
        join(|s| s.latitude),
        join(|s| s.longitude),
    )
}

/// Counters for the upstream metrics and the cycle log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests by `status` label.
    pub requests: BTreeMap<String, u64>,
    /// Readings received (one per location per successful request).
    pub fetched: u64,
    /// Readings skipped because that (station, time) was already published.
    pub duplicates: u64,
    /// Readings skipped because they would be invalid weather-raw (no temperature, out of range).
    pub invalid: u64,
    /// Readings handed on for publishing.
    pub published: u64,
}

/// What one cycle produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Cycle {
    /// `(station_id, weather-raw JSON)` to publish, in catalogue order.
    pub readings: Vec<(String, Vec<u8>)>,
    /// When to ask next, epoch ms.
    pub next_at_ms: u64,
    /// Why it waits that long, for the log.
    pub wait: &'static str,
}

/// The producer's memory between cycles.
#[derive(Debug)]
pub struct Poller {
    stations: Vec<Station>,
    interval_ms: u64,
    jitter: Jitter,
    /// Consecutive server-side failures.
    failures: u32,
    /// Per station, the last `current.time` published.
    published: HashMap<String, i64>,
    stats: Stats,
}

impl Poller {
    /// A poller for `stations` every `interval`, jitter seeded by `seed`.
    pub fn new(stations: Vec<Station>, interval: Duration, seed: u64) -> Poller {
        Poller {
            stations,
            interval_ms: interval.as_millis() as u64,
            jitter: Jitter::new(seed),
            failures: 0,
            published: HashMap::new(),
            stats: Stats::default(),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Digests the outcome of the request made at `now_ms`.
    pub fn handle(&mut self, now_ms: u64, fetch: Fetch) -> Cycle {
        *self.stats.requests.entry(fetch.label()).or_default() += 1;
        let (next_at_ms, wait, current) = match fetch {
            Fetch::Ok(current) => {
                self.failures = 0;
                (
                    policy::next_regular(now_ms, self.interval_ms, &mut self.jitter),
                    "next interval",
                    current,
                )
            }
            Fetch::Status { code: 429, reason } => {
                let limit = reason.as_deref().and_then(Limit::from_reason);
                tracing::warn!(
                    reason = reason.as_deref().unwrap_or("-"),
                    "open-meteo rate limit; waiting for its reset"
                );
                let wait = match limit {
                    Some(Limit::Minutely) => "minutely limit reset",
                    Some(Limit::Hourly) => "hourly limit reset",
                    Some(Limit::Daily) => "daily limit reset",
                    None => "unnamed limit: next hour",
                };
                (
                    policy::after_rate_limit(now_ms, limit, &mut self.jitter),
                    wait,
                    Vec::new(),
                )
            }
            Fetch::Status { code, reason } if (400..500).contains(&code) => {
                tracing::error!(
                    status = code,
                    reason = reason.as_deref().unwrap_or("-"),
                    "open-meteo rejected the request; check the station catalogue (retrying next interval)"
                );
                (
                    policy::next_regular(now_ms, self.interval_ms, &mut self.jitter),
                    "request rejected",
                    Vec::new(),
                )
            }
            failure => {
                self.failures += 1;
                tracing::warn!(outcome = ?failure, failures = self.failures, "open-meteo request failed; backing off");
                let at = policy::after_failure(now_ms, self.failures, self.interval_ms, &mut self.jitter);
                (at, "backoff", Vec::new())
            }
        };
        let readings = self.readings(current);
        Cycle {
            readings,
            next_at_ms,
            wait,
        }
    }

    /// New, valid readings as weather-raw JSON.
    fn readings(&mut self, current: Vec<Current>) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for (station, c) in self.stations.iter().zip(current) {
            self.stats.fetched += 1;
            if self.published.get(&station.id).is_some_and(|&t| t >= c.time_s) {
                self.stats.duplicates += 1;
                continue;
            }
            let payload = reading_json(station, &c);
            // The same validation the pipeline applies: never publish what it would reject.
            if let Err(e) = parse_json(&payload, 0) {
                self.stats.invalid += 1;
                tracing::warn!(station = %station.id, reason = ?e, "skipping an invalid reading from open-meteo");
                continue;
            }
            self.published.insert(station.id.clone(), c.time_s);
            self.stats.published += 1;
            out.push((station.id.clone(), payload));
        }
        out
    }
}

/// One weather-raw message (docs/design.md §3) for `station`'s current conditions.
pub fn reading_json(station: &Station, c: &Current) -> Vec<u8> {
    let ms = u64::try_from(c.time_s).unwrap_or(0).saturating_mul(1000);
    let value = serde_json::json!({
        "station_id": station.id,
        "timestamp": format_rfc3339(ms),
        "temperature": c.temperature,
        "humidity": c.humidity,
        "pressure": c.pressure,
        "wind_speed": c.wind_speed,
        "wind_direction": c.wind_direction,
        "precipitation": c.precipitation,
        "latitude": station.latitude,
        "longitude": station.longitude,
    });
    // A `Value` of strings and numbers always serialises.
    serde_json::to_vec(&value).unwrap_or_default()
}
