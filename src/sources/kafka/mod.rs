//! The Kafka source: `weather-raw` into the dataflow, at least once.
//!
//! # Partitions and wake-ups
//! Partition `i` belongs to global worker `i mod total workers`, on every process alike,
//! through `assign` (no group rebalancing can move a partition under a running window).
//! Each owned partition gets its own librdkafka queue whose non-empty callback activates
//! the operator; the operator polls with a zero timeout and never blocks the worker. A
//! 100 ms heartbeat drives the parts that depend on wall-clock time: idle partitions,
//! commits and the all-idle watermark.
//!
//! # Event time
//! A reading is late when it is older than its partition's watermark (largest event
//! time before it minus the lateness) or than the worker's watermark. The per-partition
//! rule makes the decision depend only on the partition's own order, not on how the
//! partitions interleave, so a replay decides the same way (see [`partition`]). The
//! worker's watermark is the minimum over its non-idle partitions; when all are idle it
//! follows the wall clock minus the lateness (DESIGN §4), so live windows close and a
//! finished replay drains.
//!
//! # Commits and restart
//! Auto-commit is off. Offsets are committed, with resume metadata, only behind the
//! durable frontier of the Kafka sinks ([`partition`] has the rule), and the same resume
//! points are written to the checkpoint topic ([`checkpoint`]). On start every process
//! reads the resume points of all partitions ([`KafkaPlan::prepare`]); the largest
//! recorded durable frontier becomes the *resume point*: windows ending before it were
//! acknowledged before, so they are not emitted again, and readings too old to matter for
//! any later window are skipped.
//!
//! # Bad records
//! Invalid messages (including those over 64 KiB, rejected before parsing) go to the
//! dead-letter topic with their original bytes and `reason`, `source_topic`,
//! `source_partition` and `source_offset` headers, and are counted by reason.

pub mod checkpoint;
pub mod partition;
mod plan;

pub use plan::KafkaPlan;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{ProbeHandle, Scope, StreamVec};
use timely::scheduling::SyncActivator;

use crate::kafka::watch::BrokerHealth;
use crate::kafka::{KafkaSettings, KafkaSetupError};
use crate::metrics::SourceTally;
use crate::schema::{Invalid, InvalidReason, Reading, floor_minute, parse_json};
use crate::sinks::kafka::{Ack, Checkpoints, DeadLetter, DeadLetters, KafkaOutput};
use crate::sources::{SourceContext, give_by_minute};
use partition::{PartitionState, RETAIN_MS};

/// Where to start a partition that has no committed offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartOffset {
    /// The oldest retained message: nothing the broker still holds is skipped.
    Earliest,
    /// Only messages produced from now on.
    Latest,
}

/// Settings of the Kafka source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSourceConfig {
    /// Consumer group whose committed offsets are used and updated.
    pub group: String,
    /// Wall-clock quiet time after which a caught-up partition stops holding the watermark.
    pub idle_timeout: Duration,
    /// Start of partitions without a committed offset.
    pub start: StartOffset,
    /// Minimum time between two offset commits.
    pub commit_interval: Duration,
    /// Read every partition up to its end as of the start ([`KafkaPlan::end_offsets`]),
    /// then finish like a file replay: every window closes and the run ends. For
    /// backfills and benchmarks, whose result must not depend on wall-clock idleness.
    pub stop_at_end: bool,
}

/// Messages handled per activation before yielding to other operators.
const BUDGET: usize = 50_000;
/// The wall-clock heartbeat.
const HEARTBEAT: Duration = Duration::from_millis(100);
/// How long checking and rewinding a replaced partition log may block the worker (rare).
const SEEK_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of the blocking metadata and offset requests made before the run starts.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);

/// Per-partition broker facts from librdkafka's statistics: (high watermark, fetch position).
type BrokerView = Arc<Mutex<HashMap<i32, (i64, i64)>>>;

/// librdkafka callbacks of one worker's consumer.
struct SourceClient {
    topic: String,
    view: BrokerView,
}

impl ClientContext for SourceClient {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        crate::kafka::logs::log(level, fac, message);
    }
    fn error(&self, e: rdkafka::error::KafkaError, reason: &str) {
        crate::kafka::logs::error(&e, reason);
    }
    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        let mut view = self.view.lock().unwrap_or_else(|p| p.into_inner());
        for p in topic.partitions.values().filter(|p| p.partition >= 0) {
            let high = if p.ls_offset >= 0 { p.ls_offset } else { p.hi_offset };
            if high >= 0 {
                view.insert(p.partition, (high, p.next_offset));
            }
        }
    }
}

impl ConsumerContext for SourceClient {}

/// The state a worker's source shares with its run loop, for the final commit.
pub struct Committer {
    consumer: Arc<BaseConsumer<SourceClient>>,
    output: Arc<KafkaOutput>,
    group: String,
    topic: String,
    parts: Vec<PartitionState>,
    dead: Arc<DeadLetters>,
    checkpoints: Arc<Checkpoints>,
    durable: ProbeHandle<u64>,
    last_commit: Instant,
    warned: Option<Instant>,
}

/// A handle on a worker's [`Committer`]; empty when the worker owns no partitions.
pub type CommitHandle = Rc<RefCell<Option<Committer>>>;

impl Committer {
    fn durable_ms(&self) -> u64 {
        self.durable.with_frontier(|f| f.first().copied().unwrap_or(u64::MAX))
    }

    /// Checkpoints every partition whose resume point moved, and commits the group
    /// offsets of checkpoints the broker has acknowledged. The group offset therefore never
    /// runs ahead of a checkpoint: a restart always finds the state for where it resumes.
    pub fn commit(&mut self, mode: CommitMode) {
        let durable = self.durable_ms();
        for p in &mut self.parts {
            let Some((offset, resume)) = p.committable(durable, self.dead.oldest(p.id)) else {
                continue;
            };
            if p.committed == Some((offset, resume.durable_ms)) {
                continue;
            }
            let key = checkpoint::key(&self.group, &self.topic, p.id);
            let metadata = resume.encode();
            let tracker = self.checkpoints.clone();
            let ack = || Ack::Checkpoint {
                tracker: tracker.clone(),
                partition: p.id,
                offset,
                metadata: metadata.clone(),
            };
            match self
                .output
                .send_checkpoint(&key, &checkpoint::encode(offset, &resume), ack)
            {
                Ok(()) => p.committed = Some((offset, resume.durable_ms)),
                Err(e) => tracing::warn!(error = %e, "checkpoint not written; a restart replays more"),
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
    /// to acknowledge them, then commits the group offsets synchronously.
    pub fn commit_final(&mut self, timeout: Duration) {
        self.commit(CommitMode::Sync);
        if self.output.flush(timeout).is_err() {
            tracing::warn!("checkpoints not acknowledged before the stop; a restart replays more");
        }
        self.commit(CommitMode::Sync);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Everything the source needs besides the scope.
pub struct KafkaSourceParts {
    /// The process's partition plan.
    pub plan: Arc<KafkaPlan>,
    /// Source settings.
    pub config: KafkaSourceConfig,
    /// Connection settings.
    pub settings: KafkaSettings,
    /// The producer, for dead letters.
    pub output: Arc<KafkaOutput>,
    /// The durable frontier of the sinks.
    pub durable: ProbeHandle<u64>,
    /// Broker reachability: while the brokers are away, or back for less than the idle
    /// timeout, no partition counts as idle.
    pub brokers: Option<Arc<BrokerHealth>>,
}

/// The Kafka source on the current worker. Returns the readings and the handle the run
/// loop uses for the final commit.
pub fn kafka_source<'s>(
    scope: Scope<'s, u64>,
    parts: KafkaSourceParts,
    ctx: SourceContext,
) -> (StreamVec<'s, u64, Reading>, CommitHandle) {
    let handle: CommitHandle = Rc::new(RefCell::new(None));
    let shared = handle.clone();
    let (index, peers) = (scope.index(), scope.peers());
    let stream = source(scope, "KafkaSource", move |cap, info| {
        let KafkaSourceParts {
            plan,
            config,
            settings,
            output,
            durable,
            brokers,
        } = parts;
        let owned = plan.owned_by(index, peers);
        let wake = scope.worker().sync_activator_for(info.address.to_vec());
        let activator = scope.activator_for(info.address);
        let setup = if owned.is_empty() {
            Ok(None)
        } else {
            connect(&settings, &config, &plan, &owned, wake).map(Some)
        };
        let mut cap = match setup {
            Ok(Some((consumer, queues, view))) => {
                let now = Instant::now();
                let parts = owned
                    .iter()
                    .map(|p| {
                        let (offset, resume) = match plan.committed.get(p) {
                            Some((o, r)) => (Some(*o), *r),
                            None => (None, None),
                        };
                        PartitionState::new(*p, offset, resume, now)
                    })
                    .collect();
                *shared.borrow_mut() = Some(Committer {
                    consumer,
                    output: output.clone(),
                    group: config.group.clone(),
                    topic: settings.topics.raw.clone(),
                    parts,
                    dead: Arc::new(DeadLetters::default()),
                    checkpoints: Arc::new(Checkpoints::default()),
                    durable,
                    last_commit: now,
                    warned: None,
                });
                Some((cap, queues, view))
            }
            Ok(None) => None,
            Err(e) => {
                ctx.fail(format!("{e}: {}", error_chain(&e)));
                None
            }
        };
        if cap.is_none() {
            // No partitions: release the capability so this worker never holds the
            // watermark back.
            ctx.metrics.set_watermark(ctx.local_index, u64::MAX);
        }
        let lateness = ctx.lateness_ms;
        let resume_skip = plan.resume_ms.saturating_sub(RETAIN_MS);
        let mut watermark = 0u64;
        let mut batch: Vec<Reading> = Vec::new();
        let mut queue_warned: Option<Instant> = None;
        // Each owned partition's first event time, for pacing before the frontier exists.
        let mut starts: Vec<Option<u64>> = Vec::new();
        move |output_handle| {
            let Some((held, queues, view)) = cap.as_mut() else {
                return;
            };
            let mut guard = shared.borrow_mut();
            let Some(committer) = guard.as_mut() else { return };
            let stopping = ctx.stopping();
            let now = Instant::now();
            let mut tally = SourceTally::default();
            let mut budget = BUDGET;
            let mut intake = Intake {
                output: &output,
                ctx: &ctx,
                watermark,
                resume_skip,
                future_limit: ctx.future_limit(),
                batch: &mut batch,
                tally: &mut tally,
            };
            // Serve librdkafka's callbacks (statistics, errors); stray messages polled
            // here before the split took effect are handled like any other.
            let consumer = committer.consumer.clone();
            while let Some(result) = consumer.poll(Duration::ZERO) {
                if let Ok(message) = result {
                    intake.take(&message, committer);
                }
            }
            if let Ok(mut view) = view.lock() {
                for p in &mut committer.parts {
                    if let Some(&(high, fetch)) = view.get(&p.id) {
                        p.high_watermark = Some(high);
                        p.fetch_position = (fetch >= 0).then_some(fetch);
                    }
                    // The statistics are up to a second old, so under load they often
                    // show a log end below what was consumed since; only a fresh answer
                    // from the broker can say the log really was replaced.
                    if p.log_replaced() {
                        match consumer.fetch_watermarks(&committer.topic, p.id, SEEK_TIMEOUT) {
                            Ok((_, high)) => p.high_watermark = Some(high),
                            Err(_) => p.high_watermark = None,
                        }
                    }
                    if p.log_replaced() {
                        tracing::warn!(
                            topic = %committer.topic,
                            partition = p.id,
                            log_end = p.high_watermark,
                            position = p.next_offset,
                            "the partition's log ends before what was already read: the topic was \
                             recreated or truncated; reading it again from its beginning"
                        );
                        if let Err(e) = consumer.seek(&committer.topic, p.id, Offset::Beginning, SEEK_TIMEOUT) {
                            ctx.fail(format!(
                                "kafka: cannot rewind partition {} of {}: {e}",
                                p.id, committer.topic
                            ));
                        }
                        p.restart_log(now);
                        // The statistics seen so far describe the old log.
                        view.remove(&p.id);
                    }
                }
            }
            if !stopping {
                starts.resize(queues.len(), None);
                for (i, queue) in queues.iter().enumerate() {
                    // Pacing: a partition far ahead of the slowest part of the cluster
                    // (the durable frontier of the Kafka sinks included) waits;
                    // librdkafka's bounded prefetch then stops fetching it. Checked per
                    // message, not per activation: one activation's budget can span hours
                    // of event time, which a slow sink would then have to buffer.
                    while budget > 0 {
                        if !ctx.may_send_from(committer.parts[i].max_event_ms.unwrap_or(0), starts[i]) {
                            // Held back, so behind: not idle, whatever the statistics say.
                            committer.parts[i].hold(now);
                            break;
                        }
                        match queue.poll(Duration::ZERO) {
                            None => break,
                            Some(Ok(message)) => {
                                budget -= 1;
                                intake.take(&message, committer);
                                if starts[i].is_none() {
                                    starts[i] = committer.parts[i].max_event_ms;
                                }
                            }
                            Some(Err(e)) => {
                                if queue_warned.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
                                    tracing::warn!(error = %e, "kafka consumer error");
                                    queue_warned = Some(Instant::now());
                                }
                                break;
                            }
                        }
                    }
                }
            }
            tally.accepted = batch.len() as u64;
            batch.sort_unstable_by_key(|r| r.timestamp_ms);
            give_by_minute(output_handle, held, &mut batch);
            tally.flush(&ctx.metrics);
            if config.stop_at_end && !stopping && plan.reached_end(&committer.parts) {
                for part in &committer.parts {
                    ctx.metrics.set_partition_lag(part.id, part.lag().unwrap_or(0));
                }
                tracing::info!(partitions = ?plan.owned_by(index, peers), "read to the end; finishing");
                // Dropping the capability closes every window, as the end of a file does;
                // the run loop then drains the sinks and makes the final commit.
                ctx.metrics.set_watermark(ctx.local_index, u64::MAX);
                cap = None;
                return;
            }
            if !stopping {
                // A partition that is quiet only because the broker is unreachable is not
                // idle: calling it idle would move the watermark to the wall clock, and the
                // backlog produced during the outage would arrive late and be dropped.
                let stable = brokers.as_ref().map_or(Some(Duration::MAX), |b| b.stable_for());
                let idle_allowed = stable.is_some_and(|d| d >= config.idle_timeout);
                let live: Vec<&PartitionState> = committer
                    .parts
                    .iter()
                    .filter(|p| !(idle_allowed && p.is_idle(now, config.idle_timeout)))
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
                    watermark = watermark.max(c);
                }
                held.downgrade(&floor_minute(watermark).max(*held.time()));
                ctx.metrics.set_watermark(ctx.local_index, watermark);
                for part in &committer.parts {
                    if let Some(lag) = part.lag() {
                        ctx.metrics.set_partition_lag(part.id, lag);
                    }
                }
                if committer.last_commit.elapsed() >= config.commit_interval {
                    committer.commit(CommitMode::Async);
                }
            }
            if budget == 0 {
                activator.activate();
            } else {
                activator.activate_after(HEARTBEAT);
            }
        }
    });
    (stream, handle)
}

type Queues = Vec<rdkafka::consumer::base_consumer::PartitionQueue<SourceClient>>;

/// Creates a worker's consumer, assigns its partitions at their resume offsets and
/// splits one queue per partition, each waking the operator when it fills.
fn connect(
    settings: &KafkaSettings,
    config: &KafkaSourceConfig,
    plan: &KafkaPlan,
    owned: &[i32],
    wake: SyncActivator,
) -> Result<(Arc<BaseConsumer<SourceClient>>, Queues, BrokerView), KafkaSetupError> {
    let topic = &settings.topics.raw;
    let mut cfg = settings.client_config();
    cfg.set("group.id", &config.group);
    // Offsets are committed by hand, behind the durable frontier (module docs).
    cfg.set("enable.auto.commit", "false");
    cfg.set("enable.auto.offset.store", "false");
    cfg.set("enable.partition.eof", "false");
    // Only used when the group has no committed offset for a partition.
    cfg.set(
        "auto.offset.reset",
        match config.start {
            StartOffset::Earliest => "earliest",
            StartOffset::Latest => "latest",
        },
    );
    // Statistics carry each partition's high watermark: how idleness and lag are known.
    cfg.set("statistics.interval.ms", "1000");
    // Per split partition queue, this bounds consumer memory (librdkafka's default is
    // 64 MiB per partition).
    cfg.set("queued.max.messages.kbytes", "16384");
    settings.apply_user_options(&mut cfg);
    let view: BrokerView = Arc::default();
    let consumer: BaseConsumer<SourceClient> = cfg
        .create_with_context(SourceClient {
            topic: topic.clone(),
            view: view.clone(),
        })
        .map_err(|source| KafkaSetupError::Client {
            what: "consumer",
            brokers: settings.brokers.clone(),
            source: Box::new(source),
        })?;
    let consumer = Arc::new(consumer);
    let mut tpl = TopicPartitionList::new();
    for p in owned {
        let offset = match plan.committed.get(p) {
            Some((o, _)) => Offset::Offset(*o),
            None => match config.start {
                StartOffset::Earliest => Offset::Beginning,
                StartOffset::Latest => Offset::End,
            },
        };
        tpl.add_partition_offset(topic, *p, offset)
            .map_err(|source| KafkaSetupError::Request {
                what: format!("assigning partition {p}"),
                brokers: settings.brokers.clone(),
                source: Box::new(source),
            })?;
    }
    // Split before assigning would lose the split (assign deactivates queues), and before
    // the first poll so no message lands on the main queue.
    consumer.assign(&tpl).map_err(|source| KafkaSetupError::Request {
        what: "assigning partitions".into(),
        brokers: settings.brokers.clone(),
        source: Box::new(source),
    })?;
    let wake = Arc::new(wake);
    let mut queues = Vec::with_capacity(owned.len());
    for p in owned {
        let mut queue = consumer
            .split_partition_queue(topic, *p)
            .ok_or_else(|| KafkaSetupError::NoTopic {
                topic: topic.clone(),
                brokers: settings.brokers.clone(),
            })?;
        let wake = wake.clone();
        queue.set_nonempty_callback(move || {
            let _ = wake.activate();
        });
        queues.push(queue);
    }
    Ok((consumer, queues, view))
}

/// Where one activation's messages go: readings into the batch, the rest to the
/// dead-letter topic, everything counted.
struct Intake<'a> {
    output: &'a KafkaOutput,
    ctx: &'a SourceContext,
    /// The worker's watermark at the start of the activation.
    watermark: u64,
    /// Readings before this minute only feed windows an earlier run made durable.
    resume_skip: u64,
    /// Readings stamped after this are dead-lettered as `future_timestamp`.
    future_limit: u64,
    batch: &'a mut Vec<Reading>,
    tally: &'a mut SourceTally,
}

impl Intake<'_> {
    /// Validates one message into the batch, or dead-letters it.
    fn take(&mut self, message: &BorrowedMessage<'_>, committer: &mut Committer) {
        let partition = message.partition();
        let offset = message.offset();
        let Some(state) = committer.parts.iter_mut().find(|p| p.id == partition) else {
            return;
        };
        let now = Instant::now();
        let payload = message.payload().unwrap_or(&[]);
        self.tally.bytes += payload.len() as u64;
        // Sequence for duplicate resolution: the first copy in a partition's order wins,
        // and the result is the same on every replay.
        let seq = ((offset.max(0) as u64) << 12) | (partition as u64 & 0xfff);
        let parsed = parse_json(payload, seq).and_then(|r| {
            (r.timestamp_ms <= self.future_limit)
                .then_some(r)
                .ok_or(Invalid::new(InvalidReason::FutureTimestamp, "timestamp"))
        });
        match parsed {
            Ok(reading) => {
                let late = state.observe(offset, reading.timestamp_ms, self.ctx.lateness_ms, now);
                if late || reading.timestamp_ms < self.watermark {
                    self.tally.late += 1;
                } else if floor_minute(reading.timestamp_ms) >= self.resume_skip {
                    self.batch.push(reading);
                }
            }
            Err(invalid) => {
                state.consumed(offset, now);
                self.tally.reject(invalid.reason);
                let letter = DeadLetter {
                    key: message.key(),
                    payload,
                    reason: invalid.reason.as_str(),
                    topic: message.topic(),
                    partition,
                    offset,
                };
                if let Err(e) = self.output.send_dead_letter(letter, &committer.dead) {
                    self.ctx.fail(e);
                }
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.join(": ")
}
