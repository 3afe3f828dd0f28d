//! Sinks: where emitted windows leave the dataflow.
//!
//! - [`file`]: weather-features as JSON lines (`--output`).
//! - [`kafka`]: weather-features and dead letters to Kafka; drives the durable frontier.
//! - [`store`]: the serving store behind the REST API.
//! - [`api`]: the REST API, dashboard and metrics endpoint (warp).

pub mod api;
pub mod file;
pub mod kafka;
pub mod store;
