//! weatherflow: live weather features on timely and differential dataflow.
//!
//! ```text
//! generator ─┐                                                        ┌─► JSONL files, Kafka
//! file ──────┼─► sources ─► dataflow (panes → windows → trends → ML) ─┤
//! kafka ─────┘                                                        └─► store ─► REST API, dashboard
//! ```
//!
//! - [`schema`]: the message contracts: parsing and validating readings, the features type.
//! - [`sources`]: the generator, file replay and Kafka source; they drive event time.
//! - [`dataflow`]: incremental 5-minute windows sliding every minute, in differential,
//!   and the ML stage.
//! - [`sinks`]: the operators through which windows and predictions leave: files, Kafka,
//!   the serving store.
//! - [`delivery`]: the protocol both sides share: the producer, acknowledgements, the
//!   durable frontier, checkpoints and dead letters.
//! - [`worker`]: what every operator of a worker shares, and the typed errors that stop a
//!   run ([`worker::Fatal`], with whether a retry helps).
//! - [`serving`]: the store and the REST API, used by `run` and by [`serve`].
//! - [`serve`]: `weatherflow serve`, the same API fed from the Kafka output topics.
//! - [`produce`]: `weatherflow produce`, and its Open-Meteo upstream client.
//! - [`config`]: the command line, validated once into a typed [`config::Config`].
//! - [`run`]: starts the timely workers, reports progress, shuts down cleanly.
//! - [`metrics`]: counters shared by workers and the progress reporter.
//! - [`bench`]: `weatherflow bench`, one measured `run` child per configuration.
//!
//! The contracts (message schemas, window semantics, delivery, CLI, REST API, metrics)
//! are in `docs/design.md`.
//!
//! Event time is the timely timestamp: epoch milliseconds, with records sent at the start
//! of their event minute, so progress tracking pays per minute, not per reading.

pub mod bench;
pub mod config;
pub mod dataflow;
pub mod delivery;
pub mod error;
pub mod kafka;
pub mod metrics;
pub mod ml;
pub mod produce;
pub mod run;
pub mod schema;
pub mod serve;
pub mod serving;
pub mod sinks;
pub mod sources;
pub mod stations;
pub mod worker;
