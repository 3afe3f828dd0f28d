//! Flags of the built-in generator (shared by `run` and `generate`) and of `generate`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;

use super::{ConfigError, LogFormat, invalid, parse_duration};
use crate::schema::{floor_minute, parse_rfc3339};
use crate::sources::generator::{GeneratorConfig, Speed};

/// Flags of the built-in generator, shared by `run` and `generate`.
#[derive(Clone, Debug, Args)]
pub struct GeneratorArgs {
    /// Generator: number of stations.
    #[arg(long, env = "WEATHERFLOW_STATIONS", default_value_t = 100)]
    pub stations: u64,
    /// Generator: seed of all random streams; the same seed gives the same readings.
    #[arg(long, env = "WEATHERFLOW_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Generator: stop after this many readings (over all workers). Default: run until Ctrl-C.
    #[arg(long, env = "WEATHERFLOW_EVENTS")]
    pub events: Option<u64>,
    /// Generator: event time of the first reading (RFC 3339). Default: now, to the minute.
    #[arg(long, env = "WEATHERFLOW_START")]
    pub start: Option<String>,
    /// Generator: time between two readings of one station.
    #[arg(long, env = "WEATHERFLOW_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Generator: do not inject faults (spikes, stuck sensors, bad values, duplicates, late re-deliveries).
    #[arg(long, env = "WEATHERFLOW_NO_FAULTS")]
    pub no_faults: bool,
}

impl GeneratorArgs {
    /// Validates the generator flags.
    pub fn into_config(self, speed: Speed) -> Result<GeneratorConfig, ConfigError> {
        if self.stations == 0 {
            return Err(invalid("--stations", "must be at least 1"));
        }
        let interval_ms = self.interval.as_millis() as u64;
        if interval_ms == 0 {
            return Err(invalid("--interval", "must be at least 1ms"));
        }
        let start_ms = match &self.start {
            Some(text) => {
                parse_rfc3339(text).ok_or_else(|| invalid("--start", format!("{text:?} is not an RFC 3339 time")))?
            }
            None => floor_minute(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
            ),
        };
        Ok(GeneratorConfig {
            stations: self.stations,
            seed: self.seed,
            speed,
            events: self.events,
            start_ms,
            interval_ms,
            faults: !self.no_faults,
        })
    }
}

/// Flags of `weatherflow generate`.
#[derive(Clone, Debug, Args)]
pub struct GenerateArgs {
    /// Generator settings.
    #[command(flatten)]
    pub generator: GeneratorArgs,
    /// Event time to cover per station (e.g. `24h`); sets `--events` to stations × duration / interval.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// The weather-raw JSONL file to write.
    #[arg(long)]
    pub output: PathBuf,
    /// Log format. Filter with RUST_LOG (default `info`).
    #[arg(long, value_enum, env = "WEATHERFLOW_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl GenerateArgs {
    /// Validates the flags: the generator settings, with a bounded number of readings.
    pub fn into_config(self) -> Result<(GeneratorConfig, PathBuf), ConfigError> {
        let mut cfg = self.generator.into_config(Speed::Max)?;
        if let Some(d) = self.duration {
            let steps = d.as_millis() as u64 / cfg.interval_ms;
            cfg.events = Some(cfg.events.map_or(steps * cfg.stations, |e| e.min(steps * cfg.stations)));
        }
        if cfg.events.is_none() {
            return Err(invalid("--events", "generate needs --events or --duration"));
        }
        Ok((cfg, self.output))
    }
}
