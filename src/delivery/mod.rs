//! The delivery protocol: how the pipeline knows what is safely out, and so what input it
//! may forget.
//!
//! ```text
//!   Kafka source ──readings──► dataflow ──windows──► Kafka sinks ──records──► producer ──► broker
//!        ▲  │                                          │ hold a capability per time          │
//!        │  └── dead letters, checkpoints ─────────────┼──────────────────────► producer     │
//!        │                                             ▼                                      │
//!        └────── commit ◄── durable frontier (probe) ◄─ release when every record is acked ◄──┘
//! ```
//!
//! Both sides of the dataflow take part, and neither owns the protocol, so it lives here:
//!
//! - [`producer`]: the process's one idempotent producer. Every record it sends carries an
//!   [`Ack`] that its delivery callback settles. Sends never block a worker: a full queue
//!   hands the record back ([`Sent::Full`]) for the next activation.
//! - [`acks`]: the trackers the callbacks settle. The Kafka sinks hold a capability per
//!   window time until [`WindowAcks`] says every record of that time is in the broker; the
//!   frontier of their output is the **durable frontier**.
//! - [`dead_letter`]: invalid input on its way to the dead-letter topic. A source may not
//!   commit past a dead letter the broker has not acknowledged ([`DeadLetters`]); letters
//!   the producer cannot take yet wait in an [`Outbox`].
//! - [`checkpoint`]: each partition's resume point (offset plus the state that makes a
//!   replay from it exact), written to the checkpoint topic. The group offset follows a
//!   checkpoint only once the broker has acknowledged it ([`Checkpoints`]).
//!
//! - [`compacted`]: reading a "latest record per key" topic (checkpoints, ML state) to its
//!   end before the workers start.
//!
//! The commit rule itself (which offset a partition may commit, given the durable frontier
//! and its oldest unacknowledged dead letter) is a pure function of the source's partition
//! state, in `sources::kafka::partition`.

pub mod acks;
pub mod checkpoint;
pub mod compacted;
pub mod dead_letter;
pub mod producer;

pub use acks::{Ack, Checkpoints, DeadLetters, WindowAcks};
pub use dead_letter::{DEAD_LETTER_HEAD_BYTES, DEAD_LETTER_MAX_BYTES, DeadLetter, Outbox};
pub use producer::{KafkaOutput, Sent};
