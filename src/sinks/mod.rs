//! Sinks: where emitted windows leave the dataflow.
//!
//! - [`file`]: weather-features as JSON lines (`--output`).
//! - [`kafka`]: weather-features and dead letters to Kafka; drives the durable frontier.

pub mod file;
pub mod kafka;
