//! Sinks: the dataflow operators through which emitted windows and predictions leave.
//!
//! - [`refused`]: readings refused inside the dataflow, to the dead-letter topic.
//! - [`file`]: weather-features (and predictions) as JSON lines (`--output`).
//! - [`kafka`]: weather-features and weather-predictions to Kafka; their acknowledgements
//!   make the durable frontier ([`crate::delivery`]).
//! - [`store`]: the rows the serving layer's store answers from ([`crate::serving`]).
//!
//! Sinks know nothing of sources: what both sides share (acknowledgements, checkpoints,
//! dead letters, the producer) lives in [`crate::delivery`], and the per-worker context in
//! [`crate::worker`].

pub mod file;
pub mod kafka;
pub mod refused;
pub mod store;
