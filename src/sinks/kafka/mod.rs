//! The Kafka sinks: weather-features and, with the ML stage, weather-predictions, keyed
//! by station, through the process's producer ([`KafkaOutput`]).
//!
//! # The durable frontier
//! A sink holds a capability for every window time `E` it has sent until librdkafka has
//! acknowledged every record of `E`. Its (data-less) output stream therefore has the
//! *durable* frontier: a time has passed it only when everything at that time is in the
//! broker. The Kafka source reads that frontier through a probe to decide which offsets
//! it may commit ([`crate::delivery`] has the whole protocol), so offsets never run ahead
//! of acknowledged output.
//!
//! # Backpressure
//! When the producer's queue is full the sink keeps the rest of its batch, holds its
//! capabilities and tries again shortly: the durable frontier stops, the sources' pacing
//! (`--max-ahead`) stops reading, and memory stays bounded.
//!
//! # A recreated producer
//! The sink keeps every record it sent until its time is acknowledged. When the producer
//! is recreated ([`KafkaOutput::recreate`], after a broker lost its log) the sink is woken,
//! forgets its counts and sends those records again through the new producer. What it
//! keeps is bounded by what the producer may hold unacknowledged (its queue bound).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use crate::delivery::{Ack, KafkaOutput, Sent, WindowAcks};
use crate::schema::{Prediction, WindowFeatures, format_rfc3339};
use crate::worker::WorkerContext;

/// A serialised record waiting to be sent.
struct Outgoing {
    time: u64,
    key: String,
    payload: Vec<u8>,
    headers: Option<OwnedHeaders>,
}

/// Writes every window of `windows` to the features topic, keyed by station, and returns
/// the durable stream: its frontier passes a time once all that time's records are
/// acknowledged by the broker.
pub fn kafka_features_sink<'s>(
    windows: StreamVec<'s, u64, WindowFeatures>,
    output: Arc<KafkaOutput>,
    ctx: WorkerContext,
) -> StreamVec<'s, u64, ()> {
    let topic = output.topics().features.clone();
    // Window bounds formatted once per window end, not once per station.
    let mut bounds: Option<(u64, String, String)> = None;
    kafka_sink(
        windows,
        output,
        ctx,
        topic,
        "KafkaFeaturesSink",
        move |window, buffer| {
            if bounds.as_ref().is_none_or(|(end, _, _)| *end != window.window_end) {
                bounds = Some((
                    window.window_end,
                    format_rfc3339(window.window_start),
                    format_rfc3339(window.window_end),
                ));
            }
            let (_, start, end) = bounds.as_ref()?;
            // Serialising plain numbers and strings into a Vec cannot fail.
            window.write_json(buffer, start, end).ok()?;
            Some((window.station_id, window_end_header(end)))
        },
    )
}

/// The window end rides along as a header too, so consumers can upsert by
/// (key, window_end) without parsing the payload.
fn window_end_header(end: &str) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(1).insert(Header {
        key: "window_end",
        value: Some(end),
    })
}

/// Writes every prediction to the predictions topic, keyed by station; returns the
/// durable stream like [`kafka_features_sink`].
pub fn kafka_predictions_sink<'s>(
    predictions: StreamVec<'s, u64, Prediction>,
    output: Arc<KafkaOutput>,
    ctx: WorkerContext,
) -> StreamVec<'s, u64, ()> {
    let topic = output.topics().predictions.clone();
    kafka_sink(predictions, output, ctx, topic, "KafkaPredictionsSink", |p, buffer| {
        serde_json::to_writer(&mut *buffer, &p).ok()?;
        let end = format_rfc3339(p.window_end);
        Some((p.station_id, window_end_header(&end)))
    })
}

/// The shared sink: `encode` appends a record's payload to the buffer and returns its
/// key and headers (`None` skips the record).
pub(crate) fn kafka_sink<'s, T: Clone + 'static>(
    records: StreamVec<'s, u64, T>,
    output: Arc<KafkaOutput>,
    ctx: WorkerContext,
    topic: String,
    name: &str,
    mut encode: impl FnMut(T, &mut Vec<u8>) -> Option<(String, OwnedHeaders)> + 'static,
) -> StreamVec<'s, u64, ()> {
    let scope = records.scope();
    records.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(Pipeline, name, move |initial, info| {
        drop(initial);
        let acks = Arc::new(WindowAcks::new(
            scope.worker().sync_activator_for(info.address.to_vec()),
            ctx.metrics.clone(),
        ));
        let activator = scope.activator_for(info.address.clone());
        output.on_recreate(scope.worker().sync_activator_for(info.address.to_vec()));
        let mut generation = output.generation();
        let mut held: BTreeMap<u64, Capability<u64>> = BTreeMap::new();
        let mut backlog: Vec<Outgoing> = Vec::new();
        // Sent and not yet acknowledged, by time: what a recreated producer sends again.
        let mut sent: BTreeMap<u64, Vec<Outgoing>> = BTreeMap::new();
        let mut buffer = Vec::new();
        move |(input, frontier), _out| {
            if output.generation() != generation {
                generation = output.generation();
                acks.reset();
                let again: Vec<Outgoing> = std::mem::take(&mut sent).into_values().flatten().collect();
                tracing::info!(
                    records = again.len(),
                    "producer recreated; sending unacknowledged records again"
                );
                for record in &again {
                    acks.add(record.time, 1);
                }
                backlog.splice(0..0, again);
            }
            input.for_each(|cap, data| {
                for record in data.drain(..) {
                    let time = *cap.time();
                    held.entry(time).or_insert_with(|| cap.retain(0));
                    buffer.clear();
                    let Some((key, headers)) = encode(record, &mut buffer) else {
                        continue;
                    };
                    acks.add(time, 1);
                    backlog.push(Outgoing {
                        time,
                        key,
                        payload: buffer.clone(),
                        headers: Some(headers),
                    });
                }
            });
            let mut unsent = Vec::new();
            let mut full = false;
            for record in backlog.drain(..) {
                if full {
                    unsent.push(record);
                    continue;
                }
                let ack = Box::new(Ack::Window {
                    tracker: acks.clone(),
                    time: record.time,
                });
                // The headers are cloned because a full queue hands nothing back.
                match output.send(
                    &topic,
                    record.key.as_bytes(),
                    &record.payload,
                    record.headers.clone(),
                    ack,
                ) {
                    Ok(Sent::Queued) => sent.entry(record.time).or_default().push(record),
                    Ok(Sent::Full(())) => {
                        full = true;
                        unsent.push(record);
                    }
                    Err(fatal) => {
                        ctx.fail(fatal);
                        return;
                    }
                }
            }
            backlog = unsent;
            if !backlog.is_empty() {
                // The producer's queue is full: try again soon, holding every
                // capability so nothing downstream counts these windows as durable.
                activator.activate_after(Duration::from_millis(5));
            }
            // A time is durable once no more input can arrive for it and every record
            // of it is acknowledged (records in the backlog count as unacknowledged).
            held.retain(|time, _| frontier.less_equal(time) || !acks.is_settled(*time));
            sent.retain(|time, _| !acks.is_settled(*time));
        }
    })
}
