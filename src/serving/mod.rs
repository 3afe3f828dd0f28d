//! The serving layer: what answers users' questions, both for `run` (fed by the dataflow's
//! store sinks) and for `serve` (fed by a consumer of the output topics).
//!
//! - [`store`]: the bounded, upserting in-memory store of recent windows and predictions.
//! - [`api`]: the REST API, the dashboard and `/metrics` (warp), answering from the store.
//!
//! Nothing here knows about timely: the dataflow writes into the store through
//! [`crate::sinks::store`], and `serve` through its own consumer.

pub mod api;
pub mod store;
