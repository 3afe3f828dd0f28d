//! Forecasting and anomaly detection: plain functions over plain structs, with no timely
//! or rdkafka in sight (docs/design.md §2), so that training, evaluation and the dataflow operator
//! share every line that turns observations into predictions.
//!
//! ```text
//! observation ─► history ─► features ─► pooled ridge ─► + per-station RLS correction ─► forecasts
//!      │            │                                        ▲ learns when targets arrive
//!      └────────────┴──► rules + isolation forest + forecast residual ─► anomaly score, reasons
//! ```
//!
//! - [`history`]: the compact per-station history (hourly means, minute values).
//! - [`features`]: the one feature builder.
//! - [`forecast`], [`rls`]: pooled models, online per-station correction, intervals.
//! - [`forest`], [`anomaly`]: the isolation forest and the rule detectors.
//! - [`station`]: one station's state and the step every path runs.
//! - [`snapshot`]: a station's state as it is checkpointed and restored.
//! - [`registry`]: versioned models on disk, and which models a run uses.
//! - [`embedded`]: the committed LATEST versions, built into the binary as the fallback.
//! - [`reload`]: hot reload, read on a background thread and shared with the workers.
//! - [`train`], [`evaluate`], [`data`]: offline training and evaluation on hourly CSVs.

pub mod anomaly;
pub mod commands;
pub mod data;
pub mod embedded;
pub mod evaluate;
pub mod features;
pub mod forecast;
pub mod forest;
pub mod history;
pub mod registry;
pub mod reload;
pub mod rls;
pub mod snapshot;
pub mod station;
pub mod train;

use std::path::PathBuf;

/// Why an ML operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MlError {
    /// A file could not be read or written. The I/O error is the source, not part of
    /// this message, so that a printed error chain names it once.
    #[error("cannot access {}", .0.display())]
    Io(PathBuf, #[source] std::io::Error),
    /// `--models DIR` names a directory that does not exist. Only an explicit directory
    /// is an error: without `--models`, the models built into the binary are used.
    #[error("model registry {} does not exist (give an existing --models DIR, or omit --models to use the models built into the binary)", .0.display())]
    NoRegistry(PathBuf),
    /// Input data is unusable (bad pattern, header, value).
    #[error("data: {0}")]
    Data(String),
    /// A model file is invalid or inconsistent.
    #[error("model: {0}")]
    Model(String),
    /// Training could not produce a model.
    #[error("training: {0}")]
    Train(String),
}
