//! Commits: checkpoints behind the durable frontier, then group offsets behind the
//! checkpoints the broker has acknowledged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use timely::dataflow::ProbeHandle;

use super::client::SourceClient;
use super::partition::PartitionState;
use crate::delivery::{Ack, Checkpoints, DeadLetters, KafkaOutput, Sent, checkpoint};

/// The commit state a worker's source shares with its run loop, for the final commit.
pub struct Committer {
    pub(super) consumer: Arc<BaseConsumer<SourceClient>>,
    pub(super) output: Arc<KafkaOutput>,
    pub(super) group: String,
    pub(super) topic: String,
    pub(super) parts: Vec<PartitionState>,
    pub(super) dead: Arc<DeadLetters>,
    pub(super) checkpoints: Arc<Checkpoints>,
    pub(super) durable: ProbeHandle<u64>,
    /// The resume point of this run: an earlier run made every window before it durable.
    pub(super) resume_ms: u64,
    /// The highest open (non-empty) durable frontier seen. Once the input has ended
    /// (`--stop-at-end`) the frontier is empty, yet the windows it closed early are not
    /// final: a later run on the same group, with more data, must emit them again.
    pub(super) last_open_ms: u64,
    /// Set when this worker's input ended: from then on the frontier passes through the
    /// times of windows the end of input closed, which are not final, so it is no longer
    /// sampled.
    pub(super) input_ended: bool,
    pub(super) last_commit: Instant,
    pub(super) warned: Option<Instant>,
    /// The producer generation the `committed` marks were sent with.
    pub(super) generation: u64,
}

impl Committer {
    /// The durable frontier, never below the resume point. A restarted run's own sinks
    /// start below it (its replay begins before the resume point, and the state sink
    /// holds its first snapshot's time), but the windows, predictions and states before
    /// it are in the broker from the earlier run. A checkpoint written with a lower
    /// frontier would move the next run's resume point back to windows whose early
    /// readings lie before the committed offsets, and those would be re-emitted partial.
    ///
    /// An empty frontier (the input ended and every window closed) counts as the last
    /// open frontier seen, never as "everything": the windows the end of input closed
    /// had not reached the watermark, and recording `u64::MAX` would make every later run
    /// on this group suppress all its windows. The durable frontier is global and never
    /// above the sources' watermark, so that value is a safe resume point: the windows
    /// before it were closed by the watermark and are final.
    fn durable_ms(&mut self) -> u64 {
        self.observe_durable();
        self.last_open_ms.max(self.resume_ms)
    }

    /// Samples the durable frontier while it is open. The reader calls it on every
    /// activation, so the value an ended input leaves is at most one activation old.
    pub(super) fn observe_durable(&mut self) {
        if self.input_ended {
            return;
        }
        if let Some(open) = self.durable.with_frontier(|f| f.first().copied()) {
            self.last_open_ms = self.last_open_ms.max(open);
        }
    }

    /// Checkpoints every partition whose resume point moved, and commits the group
    /// offsets of checkpoints the broker has acknowledged. The group offset therefore never
    /// runs ahead of a checkpoint: a restart always finds the state for where it resumes.
    ///
    /// Never blocks on a full producer queue: that partition's checkpoint waits for the
    /// next commit, which writes a newer one anyway.
    pub fn commit(&mut self, mode: CommitMode) {
        if self.output.generation() != self.generation {
            // The producer was recreated: checkpoints it had not acknowledged are gone, so
            // every partition writes its checkpoint again.
            self.generation = self.output.generation();
            for p in &mut self.parts {
                p.committed = None;
            }
        }
        let durable = self.durable_ms();
        for p in &mut self.parts {
            let Some((offset, resume)) = p.committable(durable, self.dead.oldest(p.id)) else {
                continue;
            };
            if p.committed == Some((offset, resume.durable_ms)) {
                continue;
            }
            let key = checkpoint::key(&self.group, &self.topic, p.id);
            let ack = Ack::Checkpoint {
                tracker: self.checkpoints.clone(),
                partition: p.id,
                offset,
                metadata: resume.encode(),
            };
            match self
                .output
                .send_checkpoint(&key, &checkpoint::encode(offset, &resume), ack)
            {
                Ok(Sent::Queued) => p.committed = Some((offset, resume.durable_ms)),
                Ok(Sent::Full(())) => tracing::debug!(partition = p.id, "producer queue full; checkpoint deferred"),
                Err(e) => tracing::warn!(
                    error = %crate::error::chain(&e),
                    "checkpoint not written; a restart replays more"
                ),
            }
        }
        self.last_commit = Instant::now();
        let acked = self.checkpoints.take();
        if acked.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (partition, offset, metadata) in &acked {
            if tpl
                .add_partition_offset(&self.topic, *partition, Offset::Offset(*offset))
                .is_ok()
                && let Some(mut elem) = tpl.find_partition(&self.topic, *partition)
            {
                elem.set_metadata(metadata);
            }
        }
        match self.consumer.commit(&tpl, mode) {
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {
                tracing::debug!(topic = %self.topic, ?mode, "offsets committed");
            }
            Err(e) => {
                // Not fatal: the checkpoints are the resume points; the group offsets only
                // serve lag monitors, and the next acknowledged checkpoint commits again.
                if self.warned.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
                    tracing::warn!(error = %e, topic = %self.topic, "offset commit failed; will retry");
                    self.warned = Some(Instant::now());
                }
            }
        }
    }

    /// The last commit of a stopping worker: checkpoints, waits (bounded) for the broker
    /// to acknowledge them, then commits the group offsets synchronously. Called by the
    /// run loop after the worker has stopped stepping, never from an operator.
    pub fn commit_final(&mut self, timeout: Duration) {
        self.commit(CommitMode::Sync);
        if self.output.flush(timeout).is_err() {
            tracing::warn!("checkpoints not acknowledged before the stop; a restart replays more");
        }
        self.commit(CommitMode::Sync);
    }
}
