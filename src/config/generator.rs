//! Flags of the built-in generator (shared by `run` and `generate`) and of `generate`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, ValueHint};

use super::{ConfigError, LogFormat, invalid, parse_duration};
use crate::schema::{floor_minute, parse_rfc3339};
use crate::sources::generator::{GeneratorConfig, Speed};
use crate::stations::Station;

/// The generator's default time between two readings of one station.
pub const DEFAULT_GENERATOR_INTERVAL: Duration = Duration::from_secs(10);

/// `--stations`: a number of synthetic stations, or a station catalogue file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StationsArg {
    /// This many synthetic stations (`st-00000`, …).
    Count(u64),
    /// The stations of a catalogue (`stations.toml`).
    Catalogue(PathBuf),
}

fn parse_stations(text: &str) -> Result<StationsArg, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("give a number of stations or a stations.toml path".into());
    }
    Ok(match text.parse::<u64>() {
        Ok(n) => StationsArg::Count(n),
        Err(_) => StationsArg::Catalogue(PathBuf::from(text)),
    })
}

impl StationsArg {
    /// Loads the catalogue, if this names one.
    pub fn load(&self) -> Result<Option<std::sync::Arc<[Station]>>, ConfigError> {
        match self {
            StationsArg::Count(_) => Ok(None),
            StationsArg::Catalogue(path) => Ok(Some(crate::stations::load(path)?.into())),
        }
    }
}

/// Flags of the built-in generator, shared by `run`, `generate` and `produce`.
#[derive(Clone, Debug, Args)]
pub struct GeneratorArgs {
    /// Stations: a number of synthetic ones, or a catalogue file (`stations.toml`) whose
    /// ids and coordinates the generator (and `produce --from open-meteo`) then uses.
    #[arg(long, env = "WEATHERFLOW_STATIONS", default_value = "100", value_parser = parse_stations, value_hint = ValueHint::AnyPath)]
    pub stations: StationsArg,
    /// Generator: seed of all random streams; the same seed gives the same readings.
    #[arg(long, env = "WEATHERFLOW_SEED", default_value_t = 42)]
    pub seed: u64,
    /// Generator: stop after this many readings (over all workers). Default: run until Ctrl-C.
    #[arg(long, env = "WEATHERFLOW_EVENTS")]
    pub events: Option<u64>,
    /// Generator: event time of the first reading (RFC 3339). Default: now, to the minute.
    #[arg(long, env = "WEATHERFLOW_START")]
    pub start: Option<String>,
    /// Time between two readings of one station: the generator's cadence (default 10s),
    /// or `produce --from open-meteo`'s polling interval (default 15m, at least 5m).
    #[arg(long, env = "WEATHERFLOW_INTERVAL", value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Generator: do not inject faults (spikes, stuck sensors, bad values, duplicates, late re-deliveries).
    #[arg(long, env = "WEATHERFLOW_NO_FAULTS")]
    pub no_faults: bool,
}

impl GeneratorArgs {
    /// Validates the generator flags.
    pub fn into_config(self, speed: Speed) -> Result<GeneratorConfig, ConfigError> {
        let catalogue = self.stations.load()?;
        self.into_config_with(speed, catalogue)
    }

    /// [`into_config`](Self::into_config) with the catalogue already loaded.
    pub fn into_config_with(
        self,
        speed: Speed,
        catalogue: Option<std::sync::Arc<[Station]>>,
    ) -> Result<GeneratorConfig, ConfigError> {
        let stations = match (&self.stations, &catalogue) {
            (_, Some(c)) => c.len() as u64,
            (StationsArg::Count(n), None) => *n,
            (StationsArg::Catalogue(_), None) => 0,
        };
        if stations == 0 {
            return Err(invalid("--stations", "must be at least 1"));
        }
        let interval_ms = self.interval.unwrap_or(DEFAULT_GENERATOR_INTERVAL).as_millis() as u64;
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
            stations,
            catalogue,
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
