//! What every Kafka sink operator does with its records once it has decided to send them:
//! send through the process's producer, keep each record until its time is acknowledged,
//! hold a capability per time until then, and send again through a recreated producer.
//!
//! The window sinks and the state sink differ only in *when* a record may go (the state
//! sink waits for the predictions it covers); this type is everything after that.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::message::OwnedHeaders;
use timely::dataflow::operators::Capability;
use timely::scheduling::Activator;

use crate::delivery::{Ack, KafkaOutput, Sent, WindowAcks};
use crate::worker::WorkerContext;

/// A serialised record waiting to be sent or acknowledged.
pub(crate) struct Outgoing {
    pub time: u64,
    pub key: String,
    /// `None` is a tombstone.
    pub payload: Option<Vec<u8>>,
    pub headers: Option<OwnedHeaders>,
}

/// One sink operator's delivery state.
pub(crate) struct Sender {
    output: Arc<KafkaOutput>,
    ctx: WorkerContext,
    topic: String,
    acks: Arc<WindowAcks>,
    activator: Activator,
    generation: u64,
    held: BTreeMap<u64, Capability<u64>>,
    backlog: Vec<Outgoing>,
    /// Sent and not yet acknowledged, by time: what a recreated producer sends again.
    sent: BTreeMap<u64, Vec<Outgoing>>,
}

impl Sender {
    /// The state of the operator at `address` (its `OperatorInfo::address`).
    pub fn new(
        scope: &timely::dataflow::Scope<'_, u64>,
        address: &[usize],
        output: Arc<KafkaOutput>,
        ctx: WorkerContext,
        topic: String,
    ) -> Sender {
        let acks = Arc::new(WindowAcks::new(
            scope.worker().sync_activator_for(address.to_vec()),
            ctx.metrics.clone(),
        ));
        output.on_recreate(scope.worker().sync_activator_for(address.to_vec()));
        Sender {
            generation: output.generation(),
            activator: scope.activator_for(address.into()),
            output,
            ctx,
            topic,
            acks,
            held: BTreeMap::new(),
            backlog: Vec::new(),
            sent: BTreeMap::new(),
        }
    }

    /// Call first in every activation: after the producer was recreated, everything not
    /// acknowledged goes again, counted afresh (the old producer's acknowledgements no
    /// longer settle anything).
    pub fn resend_if_recreated(&mut self) {
        if self.output.generation() == self.generation {
            return;
        }
        self.generation = self.output.generation();
        self.acks.reset();
        let again: Vec<Outgoing> = std::mem::take(&mut self.sent).into_values().flatten().collect();
        tracing::info!(
            topic = %self.topic,
            records = again.len(),
            "producer recreated; sending unacknowledged records again"
        );
        for record in &again {
            self.acks.add(record.time, 1);
        }
        self.backlog.splice(0..0, again);
    }

    /// Holds `cap` until every record at its time is acknowledged (and no more can come).
    pub fn hold(&mut self, cap: Capability<u64>) {
        self.held.entry(*cap.time()).or_insert(cap);
    }

    /// Queues a record; its time must be held.
    pub fn queue(&mut self, record: Outgoing) {
        self.acks.add(record.time, 1);
        self.backlog.push(record);
    }

    /// Sends what is queued. When the producer's queue is full the rest waits and the
    /// operator is woken shortly. A permanent failure is reported to the run.
    pub fn flush(&mut self) {
        let mut unsent = Vec::new();
        let mut full = false;
        for record in self.backlog.drain(..) {
            if full {
                unsent.push(record);
                continue;
            }
            let ack = Box::new(Ack::Window {
                tracker: self.acks.clone(),
                time: record.time,
            });
            // The headers are cloned because a full queue hands nothing back.
            match self.output.send(
                &self.topic,
                record.key.as_bytes(),
                record.payload.as_deref(),
                record.headers.clone(),
                ack,
            ) {
                Ok(Sent::Queued) => self.sent.entry(record.time).or_default().push(record),
                Ok(Sent::Full(())) => {
                    full = true;
                    unsent.push(record);
                }
                Err(fatal) => {
                    self.ctx.fail(fatal);
                    return;
                }
            }
        }
        self.backlog = unsent;
        if !self.backlog.is_empty() {
            // The producer's queue is full: try again soon, holding every capability so
            // nothing downstream counts these times as durable.
            self.activator.activate_after(Duration::from_millis(5));
        }
    }

    /// Releases the capabilities of every time that is complete (`open(time)` is false:
    /// no more input can arrive for it) and fully acknowledged. Records in the backlog
    /// count as unacknowledged.
    pub fn settle(&mut self, open: impl Fn(&u64) -> bool) {
        let acks = &self.acks;
        self.held.retain(|time, _| open(time) || !acks.is_settled(*time));
        self.sent.retain(|time, _| !acks.is_settled(*time));
    }
}
