//! Sinks: where emitted windows leave the dataflow.
//!
//! - [`file`]: weather-features as JSON lines (`--output`).

pub mod file;
