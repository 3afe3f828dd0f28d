//! One activation of a worker's Kafka source, step by step:
//!
//! 1. serve librdkafka's callbacks on the main queue;
//! 2. take the statistics' view of each partition, and the log checker's answers;
//! 3. read each partition's queue, paced against the cluster's output frontier;
//! 4. hand the dead letters to the producer, the readings to the dataflow;
//! 5. move the watermark, and commit when it is time.
//!
//! Nothing here waits: every Kafka request that can block runs elsewhere (the log
//! checker's thread, librdkafka's own threads), and whatever cannot go out now (a full
//! producer queue) waits for the next activation, which a heartbeat guarantees.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::CommitMode;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilderSession;
use timely::scheduling::Activator;

use super::client::{BrokerView, Queues};
use super::committer::Committer;
use super::intake::{Intake, Rules};
use super::log_check::{LogChecks, Verdict};
use super::partition::PartitionState;
use super::{KafkaPlan, KafkaSourceConfig};
use crate::delivery::{KafkaOutput, Outbox};
use crate::kafka::watch::BrokerHealth;
use crate::metrics::SourceTally;
use crate::schema::{Reading, floor_minute, now_ms};
use crate::sources::give_by_minute;
use crate::worker::{Fatal, WorkerContext};

/// Messages handled per activation before yielding to other operators.
const BUDGET: usize = 50_000;
/// The wall-clock heartbeat: idleness, commits and the all-idle watermark depend on it.
const HEARTBEAT: Duration = Duration::from_millis(100);
/// How soon to try again when the producer could not take every dead letter.
const RETRY: Duration = Duration::from_millis(5);

/// What the operator does after an activation.
pub enum Step {
    /// Keep the capability.
    Continue,
    /// Every partition was read to its end (`--stop-at-end`): drop the capability.
    Finished,
}

/// The output session of the source.
pub type Output<'a> = OutputBuilderSession<'a, u64, CapacityContainerBuilder<Vec<Reading>>>;

/// A worker's source state between activations.
pub struct Reader {
    pub(super) ctx: WorkerContext,
    pub(super) config: KafkaSourceConfig,
    pub(super) plan: Arc<KafkaPlan>,
    pub(super) output: Arc<KafkaOutput>,
    pub(super) brokers: Option<Arc<BrokerHealth>>,
    pub(super) queues: Queues,
    pub(super) view: BrokerView,
    pub(super) checks: LogChecks,
    pub(super) outbox: Outbox,
    pub(super) activator: Activator,
    pub(super) topic: Arc<str>,
    /// Readings before this minute only feed windows an earlier run made durable.
    pub(super) resume_skip: u64,
    pub(super) watermark: u64,
    pub(super) batch: Vec<Reading>,
    pub(super) queue_warned: Option<Instant>,
    /// Each owned partition's first event time, for pacing before the frontier exists.
    pub(super) starts: Vec<Option<u64>>,
    /// Broker outages seen so far ([`BrokerHealth::outages`]).
    pub(super) outages_seen: u64,
    /// Partitions whose log must be confirmed with the broker after an outage.
    pub(super) recheck: rustc_hash::FxHashSet<i32>,
}

impl Reader {
    /// One activation.
    pub fn activate(&mut self, committer: &mut Committer, held: &mut Capability<u64>, out: &mut Output<'_>) -> Step {
        let stopping = self.ctx.stopping();
        let now = Instant::now();
        let mut tally = SourceTally::default();
        let rules = Rules {
            watermark: self.watermark,
            resume_skip: self.resume_skip,
            future_limit: self.ctx.future_limit(),
            lateness_ms: self.ctx.lateness_ms,
        };
        self.serve_callbacks(committer, rules, &mut tally);
        self.update_partitions(committer, now);
        let mut budget = BUDGET;
        if !stopping {
            budget = self.read(committer, rules, &mut tally, now);
        }
        if let Err(fatal) = self.outbox.flush(&self.output) {
            self.ctx.fail(fatal);
        }
        tally.accepted = self.batch.len() as u64;
        self.batch.sort_unstable_by_key(|r| r.timestamp_ms);
        give_by_minute(out, held, &mut self.batch);
        tally.flush(&self.ctx.metrics);
        committer.observe_durable();
        if self.config.stop_at_end && !stopping && self.outbox.is_empty() && self.plan.reached_end(&committer.parts) {
            for part in &committer.parts {
                self.ctx.metrics.set_partition_lag(part.id, part.lag().unwrap_or(0));
            }
            tracing::info!(partitions = ?committer.parts.iter().map(|p| p.id).collect::<Vec<_>>(), "read to the end; finishing");
            // Dropping the capability closes every window, as the end of a file does;
            // the run loop then drains the sinks and makes the final commit.
            self.ctx.metrics.set_watermark(self.ctx.local_index, u64::MAX);
            committer.input_ended = true;
            return Step::Finished;
        }
        if !stopping {
            self.advance_watermark(committer, held, now);
            if committer.last_commit.elapsed() >= self.config.commit_interval {
                committer.commit(CommitMode::Async);
            }
        }
        if budget == 0 {
            self.activator.activate();
        } else if !self.outbox.is_empty() {
            self.activator.activate_after(RETRY);
        } else {
            self.activator.activate_after(HEARTBEAT);
        }
        Step::Continue
    }

    /// Serves librdkafka's callbacks (statistics, errors). Stray messages polled here
    /// before the split took effect are handled like any other.
    fn serve_callbacks(&mut self, committer: &mut Committer, rules: Rules, tally: &mut SourceTally) {
        let consumer = committer.consumer.clone();
        let mut intake = Intake {
            batch: &mut self.batch,
            outbox: &mut self.outbox,
            tally,
            topic: &self.topic,
        };
        while let Some(result) = consumer.poll(std::time::Duration::ZERO) {
            if let Ok(message) = result {
                intake.take(rules, &message, &mut committer.parts);
            }
        }
    }

    /// Takes the statistics' view of each partition and the log checker's answers, and
    /// asks the checker about partitions whose log looks replaced.
    fn update_partitions(&mut self, committer: &mut Committer, now: Instant) {
        // After an outage the broker may have come back without its log (a restart of a
        // broker without storage). Statistics only show that while the new log is still
        // shorter than what was read, so every partition is confirmed once with a fresh
        // answer as soon as the brokers are back, before the new log can grow past it.
        if let Some(health) = &self.brokers
            && health.check().is_ok()
            && health.outages() != self.outages_seen
        {
            self.outages_seen = health.outages();
            self.recheck.extend(committer.parts.iter().map(|p| p.id));
        }
        for verdict in self.checks.answers() {
            if !matches!(verdict, Verdict::Unanswered { .. }) {
                self.recheck.remove(&verdict.partition());
            }
            match verdict {
                Verdict::Intact { partition, high } => {
                    if let Some(p) = part(&mut committer.parts, partition) {
                        p.high_watermark = Some(high);
                    }
                }
                Verdict::Unanswered { partition } => {
                    if let Some(p) = part(&mut committer.parts, partition) {
                        p.high_watermark = None;
                    }
                }
                Verdict::Rewound { partition, high } => {
                    let Some(p) = part(&mut committer.parts, partition) else {
                        continue;
                    };
                    tracing::warn!(
                        topic = %committer.topic,
                        partition,
                        log_end = high,
                        position = p.next_offset,
                        "the partition's log ends before what was already read: the topic was \
                         recreated or truncated; reading it again from its beginning"
                    );
                    p.restart_log(now);
                    // The statistics seen so far describe the old log.
                    lock_view(&self.view).remove(&partition);
                }
                Verdict::RewindFailed { partition, error } => self.ctx.fail(Fatal::Rewind {
                    topic: committer.topic.clone(),
                    partition,
                    source: error,
                }),
            }
        }
        let view = lock_view(&self.view);
        for p in &mut committer.parts {
            if self.checks.is_pending(p.id) {
                continue;
            }
            if let Some(&(high, fetch)) = view.get(&p.id) {
                p.high_watermark = Some(high);
                p.fetch_position = (fetch >= 0).then_some(fetch);
            }
            // The statistics are up to a second old, so under load they often show a log
            // end below what was consumed since; only a fresh answer from the broker can
            // say the log really was replaced.
            if (p.log_replaced() || self.recheck.contains(&p.id))
                && let Some(position) = p.next_offset
            {
                self.checks.request(p.id, position);
            }
        }
    }

    /// Reads each partition's queue within the budget; returns the budget left.
    fn read(&mut self, committer: &mut Committer, rules: Rules, tally: &mut SourceTally, now: Instant) -> usize {
        let mut budget = BUDGET;
        self.starts.resize(self.queues.len(), None);
        let mut intake = Intake {
            batch: &mut self.batch,
            outbox: &mut self.outbox,
            tally,
            topic: &self.topic,
        };
        for (i, queue) in self.queues.iter().enumerate() {
            let id = committer.parts[i].id;
            if self.checks.is_pending(id) {
                // Its log is being checked (and maybe rewound): read it after the answer.
                committer.parts[i].hold(now);
                continue;
            }
            // Pacing: a partition far ahead of the slowest part of the cluster (the
            // durable frontier of the Kafka sinks included) waits; librdkafka's bounded
            // prefetch then stops fetching it. Checked per message, not per activation:
            // one activation's budget can span hours of event time, which a slow sink
            // would then have to buffer. Dead letters the producer cannot take yet stop
            // reading the same way.
            while budget > 0 {
                if intake.outbox.is_full()
                    || !self
                        .ctx
                        .may_send_from(committer.parts[i].max_event_ms.unwrap_or(0), self.starts[i])
                {
                    // Held back, so behind: not idle, whatever the statistics say.
                    committer.parts[i].hold(now);
                    break;
                }
                match queue.poll(Duration::ZERO) {
                    None => break,
                    Some(Ok(message)) => {
                        budget -= 1;
                        intake.take(rules, &message, &mut committer.parts);
                        if self.starts[i].is_none() {
                            self.starts[i] = committer.parts[i].max_event_ms;
                        }
                    }
                    Some(Err(e)) => {
                        if self.queue_warned.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
                            tracing::warn!(error = %e, "kafka consumer error");
                            self.queue_warned = Some(Instant::now());
                        }
                        break;
                    }
                }
            }
        }
        budget
    }

    /// The worker's watermark: the minimum over its live partitions, or the wall clock
    /// minus the lateness when all are idle.
    fn advance_watermark(&mut self, committer: &Committer, held: &mut Capability<u64>, now: Instant) {
        let lateness = self.ctx.lateness_ms;
        // A partition that is quiet only because the broker is unreachable is not idle:
        // calling it idle would move the watermark to the wall clock, and the backlog
        // produced during the outage would arrive late and be dropped.
        let stable = self.brokers.as_ref().map_or(Some(Duration::MAX), |b| b.stable_for());
        let idle_allowed = stable.is_some_and(|d| d >= self.config.idle_timeout);
        let live: Vec<&PartitionState> = committer
            .parts
            .iter()
            .filter(|p| !(idle_allowed && p.is_idle(now, self.config.idle_timeout)))
            .collect();
        let candidate = if live.is_empty() {
            Some(now_ms().saturating_sub(lateness))
        } else {
            live.iter()
                .map(|p| p.watermark(lateness))
                .collect::<Option<Vec<u64>>>()
                .and_then(|w| w.into_iter().min())
        };
        if let Some(c) = candidate {
            self.watermark = self.watermark.max(c);
        }
        held.downgrade(&floor_minute(self.watermark).max(*held.time()));
        self.ctx.metrics.set_watermark(self.ctx.local_index, self.watermark);
        for part in &committer.parts {
            if let Some(lag) = part.lag() {
                self.ctx.metrics.set_partition_lag(part.id, lag);
            }
        }
    }
}

fn part(parts: &mut [PartitionState], id: i32) -> Option<&mut PartitionState> {
    parts.iter_mut().find(|p| p.id == id)
}

fn lock_view(view: &BrokerView) -> std::sync::MutexGuard<'_, std::collections::HashMap<i32, (i64, i64)>> {
    // The statistics callback only inserts whole entries; a panic there leaves the map
    // consistent, so a poisoned lock is still good to read.
    view.lock().unwrap_or_else(|p| p.into_inner())
}
