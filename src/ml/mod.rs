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
//! - [`registry`]: versioned models on disk, hot reload.
//! - [`train`], [`evaluate`], [`data`]: offline training and evaluation on hourly CSVs.

pub mod anomaly;
pub mod commands;
pub mod data;
pub mod evaluate;
pub mod features;
pub mod forecast;
pub mod forest;
pub mod history;
pub mod registry;
pub mod rls;
pub mod station;
pub mod train;

use std::path::PathBuf;

/// Why an ML operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MlError {
    /// A file could not be read or written.
    #[error("{0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
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
