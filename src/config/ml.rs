//! Flags of `weatherflow train` and `weatherflow evaluate`.

use std::path::PathBuf;

use clap::Args;

use super::LogFormat;

/// `weatherflow train`: fit new model versions from hourly CSVs.
#[derive(Clone, Debug, Args)]
pub struct TrainArgs {
    /// Training CSVs (glob patterns, repeatable), columns by header name as in
    /// `data/historical/`.
    #[arg(long, env = "WEATHERFLOW_TRAIN_DATA", default_value = "data/historical/*.csv", num_args = 1..)]
    pub data: Vec<String>,
    /// Registry directory: new versions go to `<out>/<kind>/vN/` and LATEST is updated.
    #[arg(long, env = "WEATHERFLOW_MODELS", default_value = "models")]
    pub out: PathBuf,
    /// Labelled CSVs for the anomaly metrics recorded in the metadata (glob patterns;
    /// skipped when none match).
    #[arg(long, default_value = "data/labelled/*.csv", num_args = 1..)]
    pub labelled: Vec<String>,
    /// Seed of the isolation forest.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Trees in the isolation forest. 50 scored the same as 100 and 25 on the
    /// leave-one-station-out benchmark (README, ML section) at half the cost of 100.
    #[arg(long, default_value_t = 50)]
    pub trees: usize,
    /// Rows sampled per tree.
    #[arg(long, default_value_t = 256)]
    pub sample_size: usize,
    /// Ridge penalty of the pooled forecast models.
    #[arg(long, default_value_t = 1.0)]
    pub ridge_alpha: f64,
    /// Skip the leave-one-station-out evaluation recorded in the metadata.
    #[arg(long)]
    pub no_loso: bool,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// `weatherflow evaluate`: replay hourly CSVs through the production ML step and score it.
#[derive(Clone, Debug, Args)]
pub struct EvaluateArgs {
    /// CSVs to evaluate (glob patterns, repeatable); a `label` column adds anomaly metrics.
    #[arg(long, required = true, num_args = 1..)]
    pub data: Vec<String>,
    /// Registry to evaluate (its LATEST versions). Ignored with `--leave-one-out`.
    #[arg(long, env = "WEATHERFLOW_MODELS", default_value = "models")]
    pub models: PathBuf,
    /// Leave-one-station-out: for each evaluated station, train on the `--train-data`
    /// stations with other ids, then evaluate. The honest estimate for unseen stations.
    #[arg(long)]
    pub leave_one_out: bool,
    /// Training pool for `--leave-one-out`.
    #[arg(long, default_value = "data/historical/*.csv", num_args = 1..)]
    pub train_data: Vec<String>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}
