//! Readings rejected inside the dataflow for a station key collision
//! ([`crate::dataflow::pane::StationKey`]).
//!
//! They were counted as invalid (`station_key_collision`) where they were judged. With
//! Kafka they go to the dead-letter topic like any invalid raw message, through a sink
//! that joins the durable frontier: the offsets they came from are committed only once
//! the broker has them. Without Kafka there is no dead-letter topic, so each colliding
//! id is logged once.

use std::sync::Arc;

use rdkafka::message::{Header, OwnedHeaders};
use rustc_hash::FxHashSet;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use super::kafka::kafka_sink;
use crate::dataflow::pane::Collision;
use crate::delivery::KafkaOutput;
use crate::schema::InvalidReason;
use crate::worker::WorkerContext;

/// The dead-letter headers of a collision: the reason, the id that holds the key, the key,
/// and the reading's `seq` (for a Kafka source: `offset << 12 | partition`).
fn headers(c: &Collision) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(4)
        .insert(Header {
            key: "reason",
            value: Some(InvalidReason::StationKeyCollision.as_str()),
        })
        .insert(Header {
            key: "key_owner",
            value: Some(c.owner.as_str()),
        })
        .insert(Header {
            key: "station_key",
            value: Some(&format!("{:016x}", c.key)),
        })
        .insert(Header {
            key: "seq",
            value: Some(&c.reading.seq.to_string()),
        })
}

/// Sends every collision to the dead-letter topic, keyed by its station id; returns the
/// durable stream, like the other Kafka sinks.
pub fn kafka_collisions_sink<'s>(
    collisions: StreamVec<'s, u64, Collision>,
    output: Arc<KafkaOutput>,
    ctx: WorkerContext,
) -> StreamVec<'s, u64, ()> {
    let topic = output.topics().dlq.clone();
    kafka_sink(collisions, output, ctx, topic, "KafkaCollisionsSink", |c, buffer| {
        buffer.extend_from_slice(c.reading.to_json().as_bytes());
        Some((c.reading.station.to_string(), headers(&c)))
    })
}

/// How many colliding ids are logged, at most.
const MAX_LOGGED: usize = 1_000;

/// Logs each colliding station id once (runs without a dead-letter topic).
pub fn log_collisions(collisions: StreamVec<'_, u64, Collision>) {
    let mut seen: FxHashSet<(u64, String)> = FxHashSet::default();
    collisions.sink(Pipeline, "LogCollisions", move |(input, _frontier)| {
        input.for_each(|_cap, data| {
            for c in data.drain(..) {
                // Bounded: a flood of crafted ids is counted, but logged only so far.
                if seen.len() < MAX_LOGGED && seen.insert((c.key, c.reading.station.to_string())) {
                    tracing::warn!(
                        station = %c.reading.station,
                        key_owner = %c.owner,
                        key = %format!("{:016x}", c.key),
                        "station id shares its key with another; its readings are rejected \
                         (station_key_collision)"
                    );
                }
            }
        });
    });
}
