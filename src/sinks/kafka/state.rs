//! The state sink: the predictor's station states to the state topic, keyed by station.
//!
//! It is a Kafka sink like the window sinks ([`Sender`]), with one more rule: a station's
//! state that has taken in the window ending at `E` is sent only once the broker has the
//! predictions up to `E` (the predictions sink's durable stream is its second input). A
//! restarted run skips the windows a restored state has taken in (docs/design.md §5.6), so a
//! state must never be in the broker before the predictions it makes unnecessary.
//!
//! Its output joins the durable frontier: the predictor keeps the state stream's
//! capability at the last snapshot's time, and this sink holds each snapshot's time until
//! the broker has all of it, so the frontier passes a time only when a snapshot covering
//! every window before it is durable.

use std::collections::BTreeMap;
use std::sync::Arc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use super::{Outgoing, Sender};
use crate::dataflow::predict::StateRecord;
use crate::delivery::KafkaOutput;
use crate::worker::WorkerContext;

/// Writes `states` to the state topic once `predictions_durable` (the predictions sink's
/// output) has passed the windows each state covers; returns the durable stream.
pub fn kafka_state_sink<'s>(
    states: StreamVec<'s, u64, StateRecord>,
    predictions_durable: StreamVec<'s, u64, ()>,
    output: Arc<KafkaOutput>,
    ctx: WorkerContext,
) -> StreamVec<'s, u64, ()> {
    let scope = states.scope();
    let topic = output.topics().state.clone();
    states.binary_frontier::<_, CapacityContainerBuilder<Vec<()>>, _, _, _, _>(
        predictions_durable,
        Pipeline,
        Pipeline,
        "KafkaStateSink",
        move |initial, info| {
            drop(initial);
            let mut sender = Sender::new(&scope, &info.address, output, ctx, topic);
            // Snapshots whose predictions are not all durable yet, by time.
            let mut waiting: BTreeMap<u64, (Capability<u64>, Vec<StateRecord>)> = BTreeMap::new();
            move |(states, frontier), (gate, gate_frontier), _out| {
                sender.resend_if_recreated();
                states.for_each(|cap, data| {
                    let entry = waiting
                        .entry(*cap.time())
                        .or_insert_with(|| (cap.retain(0), Vec::new()));
                    entry.1.append(data);
                });
                gate.for_each(|_, _| {});
                // A record may go once no prediction at or before its last window can
                // still be unacknowledged. Times go in order, and one station's records
                // grow in `last_end`, so each station's records reach the broker in order.
                let gate_frontier = gate_frontier.frontier();
                for (&time, (cap, records)) in waiting.iter_mut() {
                    let mut released = false;
                    records.retain_mut(|record| {
                        if gate_frontier.less_equal(&record.last_end) {
                            return true;
                        }
                        released = true;
                        sender.queue(Outgoing {
                            time,
                            key: std::mem::take(&mut record.station),
                            payload: record.value.take(),
                            headers: None,
                        });
                        false
                    });
                    if released {
                        sender.hold(cap.clone());
                    }
                }
                waiting.retain(|_, (_, records)| !records.is_empty());
                sender.flush();
                sender.settle(|time| frontier.less_equal(time));
            }
        },
    )
}
