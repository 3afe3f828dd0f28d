//! weatherflow: live weather features on timely and differential dataflow.
//!
//! ```text
//! generator ─┐                                                        ┌─► JSONL files, Kafka
//! file ──────┼─► sources ─► dataflow (panes → windows → trends → ML) ─┤
//! kafka ─────┘                                                        └─► store ─► REST API, dashboard
//! ```
//!
//! - [`schema`]: the message contracts: parsing and validating readings, the features type.
//! - [`sources`]: the generator and file replay; both drive the event-time watermark.
//! - [`dataflow`]: incremental 5-minute windows sliding every minute, in differential.
//! - [`sinks`]: where emitted windows go: files, Kafka, and the store behind the REST API.
//! - [`serve`]: `weatherflow serve`, the same API fed from the Kafka output topics.
//! - [`config`]: the command line, validated once into a typed [`config::Config`].
//! - [`run`]: starts the timely workers, reports progress, shuts down cleanly.
//! - [`metrics`]: counters shared by workers and the progress reporter.
//! - [`bench`]: `weatherflow bench`, one measured `run` child per configuration.
//!
//! Event time is the timely timestamp: epoch milliseconds, with records sent at the start
//! of their event minute, so progress tracking pays per minute, not per reading.

pub mod bench;
pub mod config;
pub mod dataflow;
pub mod kafka;
pub mod metrics;
pub mod ml;
pub mod produce;
pub mod run;
pub mod schema;
pub mod serve;
pub mod sinks;
pub mod sources;
pub mod stations;
