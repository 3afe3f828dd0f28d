//! Flags of `weatherflow produce`, validated into a [`ProduceConfig`].

use std::time::Duration;

use clap::{Args, ValueEnum, ValueHint};

use super::{ConfigError, ConfigFileArgs, GeneratorArgs, KafkaArgs, LogFormat, invalid, parse_duration};
use crate::kafka::KafkaSettings;
use crate::sources::generator::{GeneratorConfig, Speed};

/// Where `produce` takes readings from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProduceFrom {
    /// The built-in generator (runs until stopped unless `--events`/`--duration`).
    Generator,
    /// JSONL files (`--input`), sent line by line, invalid lines included.
    File,
    /// Live current conditions of the `--stations` catalogue from the Open-Meteo API,
    /// every `--interval` (default 15m), until stopped.
    OpenMeteo,
}

/// Open-Meteo polling, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct OpenMeteoConfig {
    /// The stations to poll.
    pub stations: std::sync::Arc<[crate::stations::Station]>,
    /// API base URL.
    pub base_url: String,
    /// Time between polls.
    pub interval: Duration,
    /// Limit on one request.
    pub timeout: Duration,
    /// Seed of the polling jitter.
    pub seed: u64,
}

/// The free tier's data changes every 15 minutes; polling faster only spends the budget.
const MIN_OPEN_METEO_INTERVAL: Duration = Duration::from_secs(5 * 60);
const DEFAULT_OPEN_METEO_INTERVAL: Duration = Duration::from_secs(15 * 60);

/// Flags of `weatherflow produce`.
#[derive(Clone, Debug, Args)]
pub struct ProduceArgs {
    /// Where readings come from.
    #[arg(long, value_enum, env = "WEATHERFLOW_PRODUCE_FROM")]
    pub from: ProduceFrom,
    /// JSONL input files for `--from file`: paths or glob patterns, repeatable.
    #[arg(long, env = "WEATHERFLOW_INPUT", value_delimiter = ',', value_hint = ValueHint::AnyPath)]
    pub input: Vec<String>,
    /// Kafka connection.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Generator settings (`--from generator`).
    #[command(flatten)]
    pub generator: GeneratorArgs,
    /// Generator: event time to cover per station (e.g. `24h`). Default: run until stopped.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Messages per second; 0 sends as fast as the broker takes them.
    #[arg(long, env = "WEATHERFLOW_RATE", default_value_t = 0)]
    pub rate: u64,
    /// Open-Meteo: API base URL (tests point it at a local server).
    #[arg(
        long,
        env = "WEATHERFLOW_OPEN_METEO_URL",
        default_value = "https://api.open-meteo.com"
    )]
    pub base_url: String,
    /// Open-Meteo: longest wait for one response.
    #[arg(long, env = "WEATHERFLOW_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Serve `/health` and `/metrics` (upstream requests by status, readings fetched,
    /// duplicates skipped) on this address (`host:port`). Off by default.
    #[arg(long, env = "WEATHERFLOW_PRODUCE_API")]
    pub api: Option<String>,
    /// Partitions of topics created because they were missing.
    #[arg(long, env = "WEATHERFLOW_PARTITIONS", default_value_t = 4)]
    pub partitions: i32,
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

/// What `produce` sends.
#[derive(Clone, Debug, PartialEq)]
pub enum ProduceInput {
    /// Generated readings.
    Generator(GeneratorConfig),
    /// JSONL files.
    Files(Vec<String>),
    /// Open-Meteo.
    OpenMeteo(OpenMeteoConfig),
}

/// A validated `produce` configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct ProduceConfig {
    /// What to send.
    pub input: ProduceInput,
    /// Where.
    pub kafka: KafkaSettings,
    /// Messages per second (0 = unlimited).
    pub rate: u64,
    /// Partitions for created topics.
    pub partitions: i32,
    /// Progress log interval.
    pub progress_interval: Duration,
    /// Where to serve `/health` and `/metrics`, if anywhere.
    pub api: Option<std::net::SocketAddr>,
}

impl ProduceArgs {
    /// Validates the flags.
    pub fn into_config(self) -> Result<ProduceConfig, ConfigError> {
        let kafka = self
            .kafka
            .into_settings()?
            .ok_or_else(|| invalid("--brokers", "produce needs --brokers host:port"))?;
        if self.partitions < 1 {
            return Err(invalid("--partitions", "must be at least 1"));
        }
        let api = match &self.api {
            None => None,
            Some(text) => Some(
                std::net::ToSocketAddrs::to_socket_addrs(text.as_str())
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| invalid("--api", format!("{text:?} is not a host:port address")))?,
            ),
        };
        let input = match self.from {
            ProduceFrom::Generator => {
                let mut cfg = self.generator.into_config(Speed::Max)?;
                if let Some(d) = self.duration {
                    let steps = d.as_millis() as u64 / cfg.interval_ms;
                    cfg.events = Some(cfg.events.map_or(steps * cfg.stations, |e| e.min(steps * cfg.stations)));
                }
                ProduceInput::Generator(cfg)
            }
            ProduceFrom::File => {
                if self.input.is_empty() {
                    return Err(invalid(
                        "--input",
                        "--from file needs at least one --input path or pattern",
                    ));
                }
                ProduceInput::Files(self.input)
            }
            ProduceFrom::OpenMeteo => {
                let Some(stations) = self.generator.stations.load()? else {
                    return Err(invalid(
                        "--stations",
                        "--from open-meteo needs a station catalogue file, e.g. --stations stations.toml",
                    ));
                };
                let interval = self.generator.interval.unwrap_or(DEFAULT_OPEN_METEO_INTERVAL);
                if interval < MIN_OPEN_METEO_INTERVAL {
                    return Err(invalid(
                        "--interval",
                        "Open-Meteo's current values change every 15 minutes; poll at most every 5m",
                    ));
                }
                if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
                    return Err(invalid(
                        "--base-url",
                        format!("{:?} is not an http(s) URL", self.base_url),
                    ));
                }
                if self.request_timeout.is_zero() {
                    return Err(invalid("--request-timeout", "must be above zero"));
                }
                ProduceInput::OpenMeteo(OpenMeteoConfig {
                    stations,
                    base_url: self.base_url,
                    interval,
                    timeout: self.request_timeout,
                    seed: self.generator.seed,
                })
            }
        };
        Ok(ProduceConfig {
            input,
            kafka,
            rate: self.rate,
            partitions: self.partitions,
            progress_interval: self.progress_interval.max(Duration::from_millis(100)),
            api,
        })
    }
}
