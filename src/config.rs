//! The command line, turned once into a validated, typed [`Config`].
//!
//! Timely's own flags are kept with their meanings (`-w` workers per process, `-n`
//! processes, `-p` this process, `-h` hostfile), so `--help` is long-only. Every flag also
//! reads a `WEATHERFLOW_*` environment variable, and the flags of `run`, `serve` and
//! `produce` can also come from a `--config` TOML file ([`file`]). Raw [`RunArgs`] are
//! what clap parses; [`Config`] is what the rest of the program may rely on.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum, ValueHint};

use crate::kafka::KafkaSettings;
use crate::sources::generator::{GeneratorConfig, Speed};
use crate::sources::kafka::{KafkaSourceConfig, StartOffset};

mod api;
mod bench;
pub mod file;
mod generator;
mod kafka;
mod ml;
mod produce;

pub use api::{ApiArgs, ApiConfig, AttributionConfig, AttributionKind, ServeArgs, ServeConfig};
pub use bench::{BenchArgs, BenchConfig, BenchSource};
pub use file::ConfigFileArgs;
pub use generator::{DEFAULT_GENERATOR_INTERVAL, GenerateArgs, GeneratorArgs, StationsArg};
pub use kafka::KafkaArgs;
pub use ml::{EvaluateArgs, TrainArgs};
pub use produce::{OpenMeteoConfig, ProduceArgs, ProduceConfig, ProduceFrom, ProduceInput};

/// A flag value that makes no sense. Always the user's to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value out of its allowed range.
    #[error("invalid value for {flag}: {reason}")]
    Invalid {
        /// The flag.
        flag: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The station catalogue is unusable.
    #[error(transparent)]
    Catalogue(#[from] crate::stations::CatalogueError),
    /// The hostfile could not be read.
    #[error("cannot read hostfile {path}")]
    Hostfile {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

fn invalid(flag: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        flag,
        reason: reason.into(),
    }
}

/// Parses `500ms`, `10s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s, 500ms, 2m or 1h"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!("unknown duration unit {other:?} (use ms, s, m or h)"));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())
}

fn parse_speed(text: &str) -> Result<Speed, String> {
    if text.eq_ignore_ascii_case("max") {
        return Ok(Speed::Max);
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() && f > 0.0 => Ok(Speed::Factor(f)),
        _ => Err(format!("{text:?} is neither a positive number nor \"max\"")),
    }
}

/// Where readings come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SourceKind {
    /// The built-in deterministic generator.
    Generator,
    /// Replay of JSONL or CSV files (`--input`).
    File,
    /// The `weather-raw` Kafka topic (`--brokers`).
    Kafka,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `weatherflow` command line.
#[derive(Debug, Parser)]
#[command(
    name = "weatherflow",
    version,
    about = "Streaming weather features on timely/differential dataflow"
)]
#[command(disable_help_flag = true, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Print help (`-h` is timely's hostfile).
    #[arg(long, action = ArgAction::Help, global = true)]
    help: Option<bool>,
    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags of the default `run` command.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process; boxing buys nothing
pub enum Command {
    /// Run the streaming job (the default).
    #[command(disable_help_flag = true)]
    Run(RunArgs),
    /// Write generator readings to a weather-raw JSONL file (benchmark and test input).
    Generate(GenerateArgs),
    /// Publish readings to the weather-raw topic, creating the topics if missing.
    Produce(ProduceArgs),
    /// Train new forecast and anomaly model versions from hourly CSVs.
    Train(TrainArgs),
    /// Score the models on hourly CSVs: forecast errors and anomaly detection.
    Evaluate(EvaluateArgs),
    /// Serve the REST API and dashboard from the weather-features and weather-predictions
    /// topics (the API-only process of a deployment).
    Serve(ServeArgs),
    /// Measure throughput, latency, CPU and memory: one fresh `run` process per worker
    /// count and station count, a table and optional JSON.
    Bench(BenchArgs),
}

/// Flags of `weatherflow run`.
#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    /// Worker threads per process.
    #[arg(short = 'w', long = "workers", env = "WEATHERFLOW_WORKERS", default_value_t = 1)]
    pub workers: usize,
    /// Number of processes in the timely cluster.
    #[arg(short = 'n', long = "processes", env = "WEATHERFLOW_PROCESSES", default_value_t = 1)]
    pub processes: usize,
    /// Index of this process in the cluster (0-based).
    #[arg(short = 'p', long = "process", env = "WEATHERFLOW_PROCESS", default_value_t = 0)]
    pub process: usize,
    /// Hostfile: one `host:port` per line, process 0 first. Default: localhost:2101, 2102, ….
    #[arg(short = 'h', long = "hostfile", env = "WEATHERFLOW_HOSTFILE")]
    pub hostfile: Option<PathBuf>,
    /// Where readings come from.
    #[arg(long, value_enum, env = "WEATHERFLOW_SOURCE", default_value_t = SourceKind::Generator)]
    pub source: SourceKind,
    /// Input files for `--source file`: paths or glob patterns (`data/*.jsonl`), repeatable.
    /// `.csv` files use the historical CSV layout; anything else is JSONL.
    #[arg(long, env = "WEATHERFLOW_INPUT", value_delimiter = ',', value_hint = ValueHint::AnyPath)]
    pub input: Vec<String>,
    /// Write weather-features as JSON lines to this file. With several processes the path
    /// must contain `{process}`, replaced by the process index.
    #[arg(long, env = "WEATHERFLOW_OUTPUT")]
    pub output: Option<PathBuf>,
    /// Write weather-predictions as JSON lines to this file (`{process}` as for `--output`).
    #[arg(long, env = "WEATHERFLOW_PREDICTIONS")]
    pub predictions: Option<PathBuf>,
    /// Model registry: the forecast and anomaly operators load `<dir>/<kind>/LATEST` and
    /// reload it when it changes. It must exist when given. Default: `models` in the
    /// working directory if there is one, else the versions built into the binary (the
    /// committed LATEST ones; nothing to reload then).
    #[arg(long, env = "WEATHERFLOW_MODELS", value_hint = ValueHint::DirPath)]
    pub models: Option<PathBuf>,
    /// How often the running job checks the registry for a new LATEST (0 disables reload).
    #[arg(long, env = "WEATHERFLOW_MODEL_POLL", default_value = "5s", value_parser = parse_duration)]
    pub model_poll: Duration,
    /// Run without the forecast and anomaly operators (features only).
    #[arg(long, env = "WEATHERFLOW_NO_ML")]
    pub no_ml: bool,
    /// The REST API and dashboard.
    #[command(flatten)]
    pub api: ApiArgs,
    /// After the input ends (file replay, `--events`), keep serving the API until
    /// Ctrl-C/SIGTERM, so the results can be browsed.
    #[arg(long, env = "WEATHERFLOW_LINGER")]
    pub linger: bool,
    /// Generator settings.
    #[command(flatten)]
    pub generator: GeneratorArgs,
    /// Generator: event-time pace. `1` is real time, `60` a minute per second, `max` as fast as possible.
    #[arg(long, env = "WEATHERFLOW_SPEED", default_value = "60", value_parser = parse_speed)]
    pub speed: Speed,
    /// Allowed lateness: readings older than (latest event time − lateness) are dropped.
    #[arg(long, env = "WEATHERFLOW_LATENESS", default_value = "10s", value_parser = parse_duration)]
    pub lateness: Duration,
    /// How far ahead (event time) of the dataflow's output a source may read when
    /// replaying or catching up; it bounds what is in flight. Must exceed the lateness by
    /// at least a minute; small values cost throughput (each output minute becomes a
    /// round trip). Live data never gets near it.
    #[arg(long, env = "WEATHERFLOW_MAX_AHEAD", default_value = "30m", value_parser = parse_duration)]
    pub max_ahead: Duration,
    /// File and Kafka sources: a reading stamped further than this ahead of the wall
    /// clock is rejected as `future_timestamp` (dead-lettered from Kafka). One such
    /// reading would otherwise move its partition's watermark past every honest reading
    /// and make them all late. `0` turns the check off (replays of synthetic future data).
    #[arg(long, env = "WEATHERFLOW_MAX_FUTURE", default_value = "24h", value_parser = parse_duration)]
    pub max_future: Duration,
    /// Stations held at once over the whole run (all workers; each worker holds its share).
    /// A new station beyond it may only take the place of an idle one with little history;
    /// otherwise its readings are refused as `station_limit` (counted, dead-lettered from
    /// Kafka). The default keeps a burst of one-off ids near 1.1 GB of RSS on a
    /// 2-worker run (docs/design.md §4.11 has the memory per station).
    #[arg(long, env = "WEATHERFLOW_MAX_STATIONS", default_value_t = 50_000)]
    pub max_stations: usize,
    /// Event time after which a silent station is forgotten by every per-station
    /// structure (window state, ML state, store); it starts afresh if it comes back. The
    /// default keeps the forecasts' 26 h of hourly history across any shorter silence.
    #[arg(long, env = "WEATHERFLOW_STATION_TTL", default_value = "26h", value_parser = parse_duration)]
    pub station_ttl: Duration,
    /// File source: bytes per chunk, the unit of work split across workers.
    #[arg(long, env = "WEATHERFLOW_CHUNK_BYTES", default_value_t = 4 << 20)]
    pub chunk_bytes: u64,
    /// Interval between progress log lines.
    #[arg(long, env = "WEATHERFLOW_PROGRESS_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub progress_interval: Duration,
    /// Log format. Filter with RUST_LOG (default `info`).
    #[arg(long, value_enum, env = "WEATHERFLOW_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Kafka connection.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Kafka source: consumer group whose committed offsets say where to resume.
    #[arg(long, env = "WEATHERFLOW_GROUP", default_value = "weatherflow")]
    pub group: String,
    /// Kafka source: a caught-up partition quiet this long (wall clock) stops holding the
    /// watermark back; when all are, the watermark follows the wall clock. While the
    /// brokers are unreachable, and for this long after they return, no partition counts
    /// as idle. Keep it above the outage detection time (about 5 s).
    #[arg(long, env = "WEATHERFLOW_IDLE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Kafka source: start partitions without committed offsets at the oldest message (the default).
    #[arg(long, conflicts_with = "from_latest")]
    pub from_beginning: bool,
    /// Kafka source: start partitions without committed offsets at the newest message.
    #[arg(long)]
    pub from_latest: bool,
    /// Kafka source: least time between two offset commits.
    #[arg(long, env = "WEATHERFLOW_COMMIT_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub commit_interval: Duration,
    /// Kafka output: how long records may stay unacknowledged while the brokers answer
    /// before the producer counts as stuck (a broker lost its log) and is recreated, its
    /// unacknowledged records sent again. Checked every --progress-interval.
    #[arg(long, env = "WEATHERFLOW_STALL_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub stall_timeout: Duration,
    /// Kafka source with the ML stage: least wall time between two snapshots of the
    /// changed stations' ML state to --state-topic. Offsets are committed only up to the
    /// last acknowledged snapshot, so a longer interval writes less and replays more
    /// after a crash; `0` snapshots whenever the window frontier moves.
    #[arg(long, env = "WEATHERFLOW_STATE_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub state_interval: Duration,
    /// Kafka source with the ML stage: keep the station states in memory only, with no
    /// state topic. A restart then starts every station from the models' prior, and
    /// repeated predictions may differ from the first ones.
    #[arg(long, env = "WEATHERFLOW_NO_STATE_CHECKPOINT")]
    pub no_state_checkpoint: bool,
    /// Kafka source: read each partition up to where it ended when the run started, close
    /// every window and exit, like a file replay (backfills, benchmarks).
    #[arg(long, env = "WEATHERFLOW_STOP_AT_END", conflicts_with = "from_latest")]
    pub stop_at_end: bool,
    /// Write a machine-readable report of the finished run (counters, latency, CPU and
    /// peak memory) to this JSON file; `weatherflow bench` reads it.
    #[arg(long, hide = true)]
    pub bench_report: Option<PathBuf>,
    /// `--config` and `--print-config`.
    #[command(flatten)]
    pub file: ConfigFileArgs,
}

/// The shape of the timely cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// Workers per process.
    pub workers: usize,
    /// Process addresses, process 0 first; one entry when running alone.
    pub addresses: Vec<String>,
    /// This process.
    pub process: usize,
}

impl Cluster {
    /// The timely configuration for this process.
    pub fn timely(&self) -> timely::Config {
        use timely::CommunicationConfig as Comm;
        let communication = if self.addresses.len() > 1 {
            Comm::Cluster {
                threads: self.workers,
                process: self.process,
                addresses: self.addresses.clone(),
                report: false,
                zerocopy: false,
            }
        } else if self.workers > 1 {
            Comm::Process(self.workers)
        } else {
            Comm::Thread
        };
        let mut worker = timely::WorkerConfig::default();
        // Let spines finish merges while idle, so compaction keeps up between bursts.
        differential_dataflow::configure(
            &mut worker,
            &differential_dataflow::Config {
                idle_merge_effort: Some(1_000),
            },
        );
        timely::Config { communication, worker }
    }
}

/// Where readings come from, with everything that source needs.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceConfig {
    /// The generator.
    Generator(GeneratorConfig),
    /// File replay.
    File {
        /// Paths or glob patterns.
        inputs: Vec<String>,
        /// Bytes per chunk.
        chunk_bytes: u64,
    },
    /// The Kafka raw topic (connection in [`Config::kafka`]).
    Kafka(KafkaSourceConfig),
}

/// A validated run configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Cluster shape.
    pub cluster: Cluster,
    /// The source.
    pub source: SourceConfig,
    /// Allowed lateness, ms.
    pub lateness_ms: u64,
    /// How far sources may run ahead of the output frontier, ms.
    pub max_ahead_ms: u64,
    /// How far ahead of the wall clock a reading may be stamped, ms; `None`: unchecked.
    pub max_future_ms: Option<u64>,
    /// Stations held at once, over all workers (`--max-stations`).
    pub max_stations: usize,
    /// Silence after which a station is forgotten, ms of event time (`--station-ttl`).
    pub station_ttl_ms: u64,
    /// Features output file for this process.
    pub output: Option<PathBuf>,
    /// Progress log interval.
    pub progress_interval: Duration,
    /// Unacknowledged output for this long, with the brokers answering, recreates the
    /// producer (`--stall-timeout`).
    pub stall_timeout: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// Kafka connection; when present, features also go to Kafka.
    pub kafka: Option<KafkaSettings>,
    /// Predictions output file for this process.
    pub predictions: Option<PathBuf>,
    /// The ML stage, unless `--no-ml`.
    pub ml: Option<MlConfig>,
    /// The REST API, unless `--no-api`.
    pub api: Option<ApiConfig>,
    /// Keep serving the API after the input ends.
    pub linger: bool,
    /// The station catalogue (`--stations FILE`): names and coordinates for the API and
    /// the forecasts, whatever the source.
    pub catalogue: Option<std::sync::Arc<[crate::stations::Station]>>,
}

/// Where the ML stage finds its models.
#[derive(Clone, Debug, PartialEq)]
pub struct MlConfig {
    /// Registry directory given by `--models`; `None`: the default directory if present,
    /// else the embedded models.
    pub models: Option<PathBuf>,
    /// Reload check interval; `None` disables reload.
    pub poll: Option<Duration>,
    /// Least time between two snapshots of the station states (Kafka source only).
    pub state_interval: Duration,
    /// Checkpoint the station states (Kafka source only; off with `--no-state-checkpoint`).
    pub checkpoint_state: bool,
}

impl RunArgs {
    /// Validates the flags.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        if self.workers == 0 {
            return Err(invalid("--workers", "must be at least 1"));
        }
        if self.processes == 0 {
            return Err(invalid("--processes", "must be at least 1"));
        }
        if self.process >= self.processes {
            return Err(invalid(
                "--process",
                format!("{} is not below --processes {}", self.process, self.processes),
            ));
        }
        let addresses = match (&self.hostfile, self.processes) {
            (_, 1) => vec![String::new()],
            (Some(path), n) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Hostfile {
                    path: path.clone(),
                    source,
                })?;
                let hosts: Vec<String> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .take(n)
                    .collect();
                if hosts.len() < n {
                    return Err(invalid(
                        "--hostfile",
                        format!(
                            "{} lists {} hosts, {n} processes need one each",
                            path.display(),
                            hosts.len()
                        ),
                    ));
                }
                hosts
            }
            (None, n) => (0..n).map(|i| format!("localhost:{}", 2101 + i)).collect(),
        };
        let per_process = |flag: &'static str, path: Option<PathBuf>| match path {
            Some(path) if self.processes > 1 => {
                let text = path.to_string_lossy();
                if !text.contains("{process}") {
                    return Err(invalid(
                        flag,
                        "with several processes the path must contain {process}, so processes do not overwrite each other",
                    ));
                }
                Ok(Some(PathBuf::from(
                    text.replace("{process}", &self.process.to_string()),
                )))
            }
            other => Ok(other),
        };
        let output = per_process("--output", self.output.clone())?;
        let predictions = per_process("--predictions", self.predictions.clone())?;
        if self.no_ml && predictions.is_some() {
            return Err(invalid("--predictions", "needs the ML stage; drop --no-ml"));
        }
        let ml = (!self.no_ml).then(|| MlConfig {
            models: self.models.clone(),
            poll: (!self.model_poll.is_zero()).then_some(self.model_poll),
            state_interval: self.state_interval,
            checkpoint_state: !self.no_state_checkpoint,
        });
        let kafka = self.kafka.into_settings()?;
        let api = self.api.into_config()?;
        let catalogue = self.generator.stations.load()?;
        // A source at most `max_ahead` past the output frontier P holds the watermark at
        // most at P + max_ahead − lateness; the frontier can only pass the next minute if
        // that is at least a minute.
        if self.max_ahead < self.lateness + Duration::from_secs(60) {
            return Err(invalid(
                "--max-ahead",
                format!(
                    "must be at least --lateness ({:?}) + 1m, or the watermark can never pass the next minute",
                    self.lateness
                ),
            ));
        }
        if self.max_stations == 0 {
            return Err(invalid("--max-stations", "must be at least 1"));
        }
        // Shorter than a window plus its trend, a station would be forgotten while its
        // windows are open.
        if self.station_ttl < Duration::from_secs(10 * 60) {
            return Err(invalid("--station-ttl", "must be at least 10m"));
        }
        if self.stop_at_end && self.source != SourceKind::Kafka {
            return Err(invalid("--stop-at-end", "only applies to --source kafka"));
        }
        if self.linger && api.is_none() {
            return Err(invalid("--linger", "keeps the API serving; drop --no-api"));
        }
        let source = match self.source {
            SourceKind::Kafka => {
                if kafka.is_none() {
                    return Err(invalid("--brokers", "--source kafka needs --brokers host:port"));
                }
                if self.idle_timeout.is_zero() {
                    return Err(invalid("--idle-timeout", "must be above zero"));
                }
                SourceConfig::Kafka(KafkaSourceConfig {
                    group: self.group,
                    idle_timeout: self.idle_timeout,
                    start: if self.from_latest {
                        StartOffset::Latest
                    } else {
                        StartOffset::Earliest
                    },
                    commit_interval: self.commit_interval,
                    stop_at_end: self.stop_at_end,
                })
            }
            SourceKind::Generator => {
                SourceConfig::Generator(self.generator.into_config_with(self.speed, catalogue.clone())?)
            }
            SourceKind::File => {
                if self.input.is_empty() {
                    return Err(invalid(
                        "--input",
                        "--source file needs at least one --input path or pattern",
                    ));
                }
                if self.chunk_bytes == 0 {
                    return Err(invalid("--chunk-bytes", "must be at least 1"));
                }
                SourceConfig::File {
                    inputs: self.input,
                    chunk_bytes: self.chunk_bytes,
                }
            }
        };
        Ok(Config {
            cluster: Cluster {
                workers: self.workers,
                addresses,
                process: self.process,
            },
            source,
            lateness_ms: self.lateness.as_millis() as u64,
            max_ahead_ms: self.max_ahead.as_millis() as u64,
            max_future_ms: (!self.max_future.is_zero()).then_some(self.max_future.as_millis() as u64),
            max_stations: self.max_stations,
            station_ttl_ms: self.station_ttl.as_millis() as u64,
            output,
            progress_interval: self.progress_interval.max(Duration::from_millis(100)),
            stall_timeout: self.stall_timeout.max(Duration::from_secs(1)),
            log_format: self.log_format,
            kafka,
            predictions,
            ml,
            api,
            linger: self.linger,
            catalogue,
        })
    }
}

impl SourceConfig {
    /// The source's name, as in `--source` and the `source` metrics label.
    pub fn name(&self) -> &'static str {
        match self {
            SourceConfig::Generator(_) => "generator",
            SourceConfig::File { .. } => "file",
            SourceConfig::Kafka(_) => "kafka",
        }
    }
}

#[cfg(test)]
mod tests;
