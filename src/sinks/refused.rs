//! Readings the pane builder refused: a station key collision
//! ([`crate::dataflow::pane::StationKey`]) or the station limit
//! ([`crate::dataflow::tenancy`]).
//!
//! They were counted as invalid (`station_key_collision`, `station_limit`) where they were
//! judged. With Kafka they go to the dead-letter topic like any invalid raw message,
//! through a sink that joins the durable frontier: the offsets they came from are
//! committed only once the broker has them. Without Kafka there is no dead-letter topic,
//! so each refused id is logged once (up to a bound).

use std::sync::Arc;

use rdkafka::message::{Header, OwnedHeaders};
use rustc_hash::FxHashSet;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use super::kafka::kafka_sink;
use crate::dataflow::pane::{Refusal, Refused};
use crate::delivery::KafkaOutput;
use crate::worker::WorkerContext;

/// The dead-letter headers of a refused reading: the reason and the reading's `seq` (for
/// a Kafka source: `offset << 12 | partition`); for a collision also the id that holds
/// the key, and the key.
fn headers(r: &Refused) -> OwnedHeaders {
    let headers = OwnedHeaders::new_with_capacity(4)
        .insert(Header {
            key: "reason",
            value: Some(r.refusal.reason().as_str()),
        })
        .insert(Header {
            key: "seq",
            value: Some(&r.reading.seq.to_string()),
        });
    match &r.refusal {
        Refusal::Collision { owner, key } => headers
            .insert(Header {
                key: "key_owner",
                value: Some(owner.as_str()),
            })
            .insert(Header {
                key: "station_key",
                value: Some(&format!("{key:016x}")),
            }),
        Refusal::StationLimit => headers,
    }
}

/// Sends every refused reading to the dead-letter topic, keyed by its station id; returns
/// the durable stream, like the other Kafka sinks.
pub fn kafka_refused_sink<'s>(
    refused: StreamVec<'s, u64, Refused>,
    output: Arc<KafkaOutput>,
    ctx: WorkerContext,
) -> StreamVec<'s, u64, ()> {
    let topic = output.topics().dlq.clone();
    kafka_sink(refused, output, ctx, topic, "KafkaRefusedSink", |r, buffer| {
        buffer.extend_from_slice(r.reading.to_json().as_bytes());
        Some((r.reading.station.to_string(), headers(&r)))
    })
}

/// How many refused ids are logged, at most, per worker.
const MAX_LOGGED: usize = 1_000;

/// Logs each refused station id once (runs without a dead-letter topic).
pub fn log_refused(refused: StreamVec<'_, u64, Refused>) {
    let mut seen: FxHashSet<String> = FxHashSet::default();
    let mut limit_logged = false;
    refused.sink(Pipeline, "LogRefused", move |(input, _frontier)| {
        input.for_each(|_cap, data| {
            for r in data.drain(..) {
                match &r.refusal {
                    // Bounded: a flood of crafted ids is counted, but logged only so far.
                    Refusal::Collision { owner, key } => {
                        if seen.len() < MAX_LOGGED && seen.insert(r.reading.station.to_string()) {
                            tracing::warn!(
                                station = %r.reading.station,
                                key_owner = %owner,
                                key = %format!("{key:016x}"),
                                "station id shares its key with another; its readings are rejected \
                                 (station_key_collision)"
                            );
                        }
                    }
                    Refusal::StationLimit => {
                        if !limit_logged {
                            limit_logged = true;
                            tracing::warn!(
                                station = %r.reading.station,
                                "a worker holds its share of --max-stations and no station may make way; \
                                 readings of new stations are refused and counted (station_limit)"
                            );
                        }
                    }
                }
            }
        });
    });
}
