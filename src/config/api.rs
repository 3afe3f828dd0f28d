//! Flags of the REST API (shared by `run` and `serve`) and of `weatherflow serve`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::{ConfigError, ConfigFileArgs, KafkaArgs, LogFormat, invalid, parse_duration};
use crate::kafka::KafkaSettings;
use crate::serving::api::model::{Attribution, OPEN_METEO};
use crate::serving::store::StoreConfig;

/// A data credit the dashboard and `/stations` show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AttributionKind {
    /// No credit (generated or your own data).
    None,
    /// "Weather data by Open-Meteo.com" (CC BY 4.0), required when showing Open-Meteo data.
    OpenMeteo,
}

/// REST API flags.
#[derive(Clone, Debug, Args)]
pub struct ApiArgs {
    /// Address of the REST API and dashboard (`host:port`; port 0 picks a free one). In a
    /// cluster only process 0 serves, with every station.
    #[arg(long, env = "WEATHERFLOW_API", default_value = "127.0.0.1:8080")]
    pub api: String,
    /// Do not serve the REST API and dashboard (and keep no results in memory for it).
    #[arg(long, env = "WEATHERFLOW_NO_API")]
    pub no_api: bool,
    /// Event time of windows and predictions kept per station for the history routes.
    /// Memory grows with stations × history: about 0.4 KiB per station-minute with ML.
    #[arg(long, env = "WEATHERFLOW_HISTORY", default_value = "24h", value_parser = parse_duration)]
    pub history: Duration,
    /// Anomalies kept for `GET /anomalies`.
    #[arg(long, env = "WEATHERFLOW_ANOMALY_FEED", default_value_t = 1000)]
    pub anomaly_feed: usize,
    /// Allow cross-origin requests from this origin (`https://example.org`, or `*`;
    /// repeatable or comma-separated). CORS is off without it.
    #[arg(long = "cors-origin", env = "WEATHERFLOW_CORS_ORIGIN", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// Data credit shown by the dashboard; use `open-meteo` when the readings come from it.
    #[arg(long, value_enum, env = "WEATHERFLOW_ATTRIBUTION", default_value_t = AttributionKind::None)]
    pub attribution: AttributionKind,
}

/// A validated API configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiConfig {
    /// Where to listen.
    pub addr: SocketAddr,
    /// What the store keeps.
    pub store: StoreConfig,
    /// CORS origins; empty = off.
    pub cors_origins: Vec<String>,
    /// The data credit, if any.
    pub attribution: Option<AttributionConfig>,
}

/// The credit to show, by name (the texts live with the API model).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttributionConfig {
    /// Open-Meteo, CC BY 4.0.
    OpenMeteo,
}

impl AttributionConfig {
    /// The credit's texts and links.
    pub fn attribution(self) -> Attribution {
        match self {
            AttributionConfig::OpenMeteo => OPEN_METEO,
        }
    }
}

fn valid_origin(origin: &str) -> bool {
    if origin == "*" {
        return true;
    }
    let Some(rest) = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty() && !rest.contains('/') && rest.chars().all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c))
}

impl ApiArgs {
    /// Validates the flags; `None` with `--no-api`.
    pub fn into_config(self) -> Result<Option<ApiConfig>, ConfigError> {
        if self.no_api {
            return Ok(None);
        }
        let addr = self
            .api
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| invalid("--api", format!("{:?} is not a host:port address", self.api)))?;
        if self.history < Duration::from_secs(60) {
            return Err(invalid("--history", "must be at least 1m (one window)"));
        }
        if !(1..=1_000_000).contains(&self.anomaly_feed) {
            return Err(invalid("--anomaly-feed", "must be from 1 to 1000000"));
        }
        if let Some(bad) = self.cors_origins.iter().find(|o| !valid_origin(o)) {
            return Err(invalid(
                "--cors-origin",
                format!("{bad:?} is not an origin like https://example.org or http://localhost:3000, nor *"),
            ));
        }
        Ok(Some(ApiConfig {
            addr,
            store: StoreConfig {
                history_ms: self.history.as_millis() as u64,
                anomaly_capacity: self.anomaly_feed,
            },
            cors_origins: self.cors_origins,
            attribution: match self.attribution {
                AttributionKind::None => None,
                AttributionKind::OpenMeteo => Some(AttributionConfig::OpenMeteo),
            },
        }))
    }
}

/// Flags of `weatherflow serve`.
#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    /// Kafka connection (`--brokers` is required).
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The API.
    #[command(flatten)]
    pub api: ApiArgs,
    /// Rebuild from the oldest message of each partition instead of from the last
    /// `--history` of wall-clock time.
    #[arg(long, env = "WEATHERFLOW_SERVE_FROM_BEGINNING")]
    pub from_beginning: bool,
    /// Station catalogue (`stations.toml`) whose names and coordinates `/stations` shows.
    #[arg(long, env = "WEATHERFLOW_STATIONS")]
    pub stations: Option<std::path::PathBuf>,
    /// Interval between progress log lines.
    #[arg(long, env = "WEATHERFLOW_PROGRESS_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub progress_interval: Duration,
    /// Log format. Filter with RUST_LOG (default `info`).
    #[arg(long, value_enum, env = "WEATHERFLOW_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// `--config` and `--print-config`.
    #[command(flatten)]
    pub file: ConfigFileArgs,
}

/// A validated `serve` configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct ServeConfig {
    /// The broker and topics.
    pub kafka: KafkaSettings,
    /// The API (always on: serving is the point).
    pub api: ApiConfig,
    /// Read every partition from its oldest message.
    pub from_beginning: bool,
    /// Progress log interval.
    pub progress_interval: Duration,
    /// Names and coordinates for `/stations`.
    pub catalogue: Option<std::sync::Arc<[crate::stations::Station]>>,
}

impl ServeArgs {
    /// Validates the flags.
    pub fn into_config(self) -> Result<ServeConfig, ConfigError> {
        let kafka = self
            .kafka
            .into_settings()?
            .ok_or_else(|| invalid("--brokers", "serve reads Kafka: give --brokers host:port"))?;
        if self.api.no_api {
            return Err(invalid("--no-api", "serve exists to serve the API; drop --no-api"));
        }
        let api = self.api.into_config()?.ok_or_else(|| invalid("--api", "missing"))?;
        Ok(ServeConfig {
            kafka,
            api,
            from_beginning: self.from_beginning,
            progress_interval: self.progress_interval.max(Duration::from_millis(100)),
            catalogue: match &self.stations {
                Some(path) => Some(crate::stations::load(path)?.into()),
                None => None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        for ok in ["*", "https://example.org", "http://localhost:3000", "http://[::1]:8080"] {
            assert!(valid_origin(ok), "{ok}");
        }
        for bad in ["example.org", "https://", "https://a/b", "ftp://x", "https://a b"] {
            assert!(!valid_origin(bad), "{bad}");
        }
    }
}
