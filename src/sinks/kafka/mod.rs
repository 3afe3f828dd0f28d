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

mod sender;
pub mod state;

use std::sync::Arc;

use rdkafka::message::{Header, OwnedHeaders};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use crate::delivery::KafkaOutput;
use crate::schema::{Prediction, WindowFeatures, format_rfc3339};
use crate::worker::WorkerContext;
pub(crate) use sender::{Outgoing, Sender};

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
        let mut sender = Sender::new(&scope, &info.address, output, ctx, topic);
        let mut buffer = Vec::new();
        move |(input, frontier), _out| {
            sender.resend_if_recreated();
            input.for_each(|cap, data| {
                let time = *cap.time();
                sender.hold(cap.retain(0));
                for record in data.drain(..) {
                    buffer.clear();
                    let Some((key, headers)) = encode(record, &mut buffer) else {
                        continue;
                    };
                    sender.queue(Outgoing {
                        time,
                        key,
                        payload: Some(buffer.clone()),
                        headers: Some(headers),
                    });
                }
            });
            sender.flush();
            // A time is durable once no more input can arrive for it and every record
            // of it is acknowledged.
            sender.settle(|time| frontier.less_equal(time));
        }
    })
}
