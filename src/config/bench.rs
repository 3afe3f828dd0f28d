//! Flags of `weatherflow bench`, validated into a [`BenchConfig`].

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{ConfigError, LogFormat, SourceKind, invalid, parse_duration};
use crate::sources::generator::Speed;

/// Flags of `weatherflow bench`.
#[derive(Clone, Debug, Args)]
pub struct BenchArgs {
    /// Where readings come from: the generator (in process, no parsing), a file replay
    /// (JSON parsing included), or a Kafka topic that the bench first fills with
    /// generated readings (needs --brokers).
    #[arg(long, value_enum, default_value_t = SourceKind::Generator)]
    pub source: SourceKind,
    /// Input files for `--source file` (paths or glob patterns, comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub input: Vec<String>,
    /// Readings per run (generator and Kafka; a file replay reads the whole file).
    #[arg(long, default_value_t = 8_640_000)]
    pub events: u64,
    /// Active stations, comma-separated for one series of runs per count (e.g.
    /// `1000,10000,100000`). For a file replay it only labels the runs and sizes the
    /// memory per station, so give the file's station count.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    pub stations: Vec<u64>,
    /// Worker counts: one run per count, each in a fresh process.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    pub workers: Vec<usize>,
    /// Runs per (stations, workers) pair. Runs alternate between worker counts, so a slow
    /// spell of the machine hits them alike; the summary gives medians.
    #[arg(long, default_value_t = 1)]
    pub repeat: usize,
    /// Include the forecast and anomaly operators (the default).
    #[arg(long, overrides_with = "no_ml")]
    pub with_ml: bool,
    /// Features only: windows and trends, no ML (the job the peer engines run).
    #[arg(long, overrides_with = "with_ml")]
    pub no_ml: bool,
    /// Model registry for the ML operators.
    #[arg(long, default_value = "models")]
    pub models: PathBuf,
    /// Generator: seed of the readings.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Generator: event-time cadence of each station.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Generator: event-time pace, as for `run` (`max`, or event seconds per wall second).
    /// With 1,000 stations at 10 s, `10000` offers 1 M readings/s: latency at a given
    /// load, rather than at saturation.
    #[arg(long, default_value = "max", value_parser = super::parse_speed)]
    pub speed: Speed,
    /// Generator (and the Kafka load): no injected faults (duplicates, late and invalid
    /// readings), so every run sees exactly `--events` valid readings.
    #[arg(long)]
    pub no_faults: bool,
    /// Kafka: bootstrap servers.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Kafka: partitions of the bench topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Write the results as JSON: to stdout without a value (the table then goes to
    /// stderr), or to the given file.
    #[arg(long, num_args = 0..=1, default_missing_value = "-", value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Log format of the bench's own messages.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Further `run` flags for every run, after `--` (e.g. `-- --max-ahead 2m`).
    #[arg(last = true, value_name = "RUN FLAGS")]
    pub run_args: Vec<String>,
}

/// Where a bench's readings come from.
#[derive(Clone, Debug, PartialEq)]
pub enum BenchSource {
    /// The generator, `events` readings per run.
    Generator {
        /// Readings per run.
        events: u64,
        /// Cadence per station.
        interval: Duration,
        /// Seed.
        seed: u64,
        /// No injected faults.
        no_faults: bool,
        /// Pace.
        speed: Speed,
    },
    /// A file replay.
    File {
        /// Paths or patterns.
        inputs: Vec<String>,
    },
    /// A Kafka topic loaded with generated readings before the runs.
    Kafka {
        /// Bootstrap servers.
        brokers: String,
        /// Partitions of the topic.
        partitions: i32,
        /// Readings loaded.
        events: u64,
        /// Cadence per station.
        interval: Duration,
        /// Seed.
        seed: u64,
        /// No injected faults.
        no_faults: bool,
    },
}

impl BenchSource {
    /// The `--source` name.
    pub fn name(&self) -> &'static str {
        match self {
            BenchSource::Generator { .. } => "generator",
            BenchSource::File { .. } => "file",
            BenchSource::Kafka { .. } => "kafka",
        }
    }
}

/// A validated bench configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchConfig {
    /// The source.
    pub source: BenchSource,
    /// Station counts, one series each.
    pub stations: Vec<u64>,
    /// Worker counts.
    pub workers: Vec<usize>,
    /// Runs per pair.
    pub repeat: usize,
    /// With the ML operators.
    pub ml: bool,
    /// Model registry.
    pub models: PathBuf,
    /// JSON destination (`-` = stdout).
    pub json: Option<PathBuf>,
    /// Extra `run` flags.
    pub run_args: Vec<String>,
}

/// More workers than this on one machine only measures the scheduler.
const MAX_WORKERS: usize = 256;

impl BenchArgs {
    /// Validates the flags.
    pub fn into_config(self) -> Result<BenchConfig, ConfigError> {
        if self.workers.is_empty() || self.workers.iter().any(|w| !(1..=MAX_WORKERS).contains(w)) {
            return Err(invalid("--workers", format!("give counts from 1 to {MAX_WORKERS}")));
        }
        if self.stations.is_empty() || self.stations.contains(&0) {
            return Err(invalid("--stations", "give station counts of at least 1"));
        }
        if self.repeat == 0 {
            return Err(invalid("--repeat", "must be at least 1"));
        }
        let generated = |flag| {
            if self.events == 0 {
                return Err(invalid(flag, "must be at least 1"));
            }
            if self.interval.is_zero() {
                return Err(invalid("--interval", "must be above zero"));
            }
            Ok(())
        };
        let source = match self.source {
            SourceKind::Generator => {
                generated("--events")?;
                BenchSource::Generator {
                    events: self.events,
                    interval: self.interval,
                    seed: self.seed,
                    no_faults: self.no_faults,
                    speed: self.speed,
                }
            }
            SourceKind::File => {
                if self.input.is_empty() {
                    return Err(invalid("--input", "--source file needs at least one --input path"));
                }
                if self.stations.len() > 1 {
                    return Err(invalid("--stations", "a file replay has one station count: the file's"));
                }
                BenchSource::File { inputs: self.input }
            }
            SourceKind::Kafka => {
                generated("--events")?;
                let brokers = self
                    .brokers
                    .filter(|b| !b.trim().is_empty())
                    .ok_or_else(|| invalid("--brokers", "--source kafka needs --brokers host:port"))?;
                if self.partitions < 1 {
                    return Err(invalid("--partitions", "must be at least 1"));
                }
                BenchSource::Kafka {
                    brokers,
                    partitions: self.partitions,
                    events: self.events,
                    interval: self.interval,
                    seed: self.seed,
                    no_faults: self.no_faults,
                }
            }
        };
        Ok(BenchConfig {
            source,
            stations: self.stations,
            workers: self.workers,
            repeat: self.repeat,
            ml: !self.no_ml,
            models: self.models,
            json: self.json,
            run_args: self.run_args,
        })
    }
}
