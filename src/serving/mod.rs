//! The serving layer: what answers users' questions, both for `run` (fed by the dataflow's
//! store sinks) and for `serve` (fed by a consumer of the output topics).
//!
//! - [`store`]: the bounded, upserting in-memory store of recent windows and predictions.
//! - [`tail`]: a consumer of the output topics that fills a store: `serve` all along,
//!   `run --brokers` once at start.
//! - [`api`]: the REST API, the dashboard and `/metrics` (warp), answering from the store.
//!
//! Nothing here knows about timely: the dataflow writes into the store through
//! [`crate::sinks::store`], and `serve` (and `run` at start) through [`tail`].

pub mod api;
pub mod store;
pub mod tail;
