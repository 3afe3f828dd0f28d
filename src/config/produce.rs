//! Flags of `weatherflow produce`, validated into a [`ProduceConfig`].

use std::time::Duration;

use clap::{Args, ValueEnum};

use super::{ConfigError, GeneratorArgs, KafkaArgs, LogFormat, invalid, parse_duration};
use crate::kafka::KafkaSettings;
use crate::sources::generator::{GeneratorConfig, Speed};

/// Where `produce` takes readings from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProduceFrom {
    /// The built-in generator (runs until stopped unless `--events`/`--duration`).
    Generator,
    /// JSONL files (`--input`), sent line by line, invalid lines included.
    File,
}

/// Flags of `weatherflow produce`.
#[derive(Clone, Debug, Args)]
pub struct ProduceArgs {
    /// Where readings come from.
    #[arg(long, value_enum, env = "WEATHERFLOW_PRODUCE_FROM")]
    pub from: ProduceFrom,
    /// JSONL input files for `--from file`: paths or glob patterns, repeatable.
    #[arg(long, env = "WEATHERFLOW_INPUT", value_delimiter = ',')]
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
    /// Partitions of topics created because they were missing.
    #[arg(long, env = "WEATHERFLOW_PARTITIONS", default_value_t = 4)]
    pub partitions: i32,
    /// Interval between progress log lines.
    #[arg(long, env = "WEATHERFLOW_PROGRESS_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub progress_interval: Duration,
    /// Log format. Filter with RUST_LOG (default `info`).
    #[arg(long, value_enum, env = "WEATHERFLOW_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// What `produce` sends.
#[derive(Clone, Debug, PartialEq)]
pub enum ProduceInput {
    /// Generated readings.
    Generator(GeneratorConfig),
    /// JSONL files.
    Files(Vec<String>),
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
        };
        Ok(ProduceConfig {
            input,
            kafka,
            rate: self.rate,
            partitions: self.partitions,
            progress_interval: self.progress_interval.max(Duration::from_millis(100)),
        })
    }
}
