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
//! follows the wall clock minus the lateness (docs/design.md §4), so live windows close and a
//! finished replay drains.
//!
//! # Commits and restart
//! Auto-commit is off. Offsets are committed, with resume metadata, only behind the
//! durable frontier of the Kafka sinks ([`partition`] has the rule), and the same resume
//! points are written to the checkpoint topic ([`crate::delivery::checkpoint`]). On start every process
//! reads the resume points of all partitions ([`KafkaPlan::prepare`]); the largest
//! recorded durable frontier becomes the *resume point*: windows ending before it were
//! acknowledged before, so they are not emitted again, and readings too old to matter for
//! any later window are skipped.
//!
//! # Bad records
//! Invalid messages (including those over 64 KiB, rejected before parsing) go to the
//! dead-letter topic with their original bytes and `reason`, `source_topic`,
//! `source_partition` and `source_offset` headers, and are counted by reason
//! ([`intake`]).
//!
//! # Never blocking
//! An activation never waits ([`reader`] has its steps): dead letters the producer cannot
//! take yet wait in an outbox, a checkpoint that does not fit waits for the next commit,
//! and the broker requests that confirm and rewind a replaced log run on a thread of
//! their own ([`log_check`]).

mod client;
mod committer;
mod intake;
mod log_check;
pub mod partition;
mod plan;
mod reader;

pub use committer::Committer;
pub use plan::KafkaPlan;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{ProbeHandle, Scope, StreamVec};

use crate::delivery::{KafkaOutput, Outbox};
use crate::kafka::KafkaSettings;
use crate::kafka::watch::BrokerHealth;
use crate::schema::Reading;
use crate::worker::{Fatal, WorkerContext};
use partition::{PartitionState, RETAIN_MS};
use reader::{Reader, Step};

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

/// Timeout of the blocking metadata and offset requests made before the run starts.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);

/// A handle on a worker's [`Committer`]; empty when the worker owns no partitions.
pub type CommitHandle = Rc<RefCell<Option<Committer>>>;

/// Everything the source needs besides the scope.
pub struct KafkaSourceParts {
    /// The process's partition plan.
    pub plan: Arc<KafkaPlan>,
    /// Source settings.
    pub config: KafkaSourceConfig,
    /// Connection settings.
    pub settings: KafkaSettings,
    /// The producer, for dead letters and checkpoints.
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
    ctx: WorkerContext,
) -> (StreamVec<'s, u64, Reading>, CommitHandle) {
    let handle: CommitHandle = Rc::new(RefCell::new(None));
    let shared = handle.clone();
    let (index, peers) = (scope.index(), scope.peers());
    let stream = source(scope, "KafkaSource", move |cap, info| {
        let owned = parts.plan.owned_by(index, peers);
        let worker = scope.worker();
        let mut reader = None;
        if !owned.is_empty() {
            let wake = || worker.sync_activator_for(info.address.to_vec());
            let activator = scope.activator_for(info.address.clone());
            match start(parts, &owned, ctx.clone(), [wake(), wake(), wake()], activator) {
                Ok((r, committer)) => {
                    *shared.borrow_mut() = Some(committer);
                    reader = Some(r);
                }
                Err(fatal) => ctx.fail(fatal),
            }
        }
        let mut cap = reader.is_some().then_some(cap);
        if cap.is_none() {
            // No partitions: release the capability so this worker never holds the
            // watermark back.
            ctx.metrics.set_watermark(ctx.local_index, u64::MAX);
        }
        move |out| {
            let (Some(held), Some(reader)) = (cap.as_mut(), reader.as_mut()) else {
                return;
            };
            let mut guard = shared.borrow_mut();
            let Some(committer) = guard.as_mut() else { return };
            if let Step::Finished = reader.activate(committer, held, out) {
                cap = None;
            }
        }
    });
    (stream, handle)
}

/// Connects a worker's consumer and builds its reader and committer.
fn start(
    parts: KafkaSourceParts,
    owned: &[i32],
    ctx: WorkerContext,
    [wake, wake_checks, wake_recreated]: [timely::scheduling::SyncActivator; 3],
    activator: timely::scheduling::Activator,
) -> Result<(Reader, Committer), Fatal> {
    let KafkaSourceParts {
        plan,
        config,
        settings,
        output,
        durable,
        brokers,
    } = parts;
    let connected =
        client::connect(&settings, &config, &plan, owned, wake).map_err(|e| Fatal::KafkaSetup(Arc::new(e)))?;
    // A recreated producer wakes the source, so its outbox sends unacknowledged dead
    // letters again and its committer writes checkpoints again.
    output.on_recreate(wake_recreated);
    let topic = settings.topics.raw.clone();
    let checks = log_check::LogChecks::start(connected.consumer.clone(), topic.clone(), wake_checks).map_err(|e| {
        Fatal::KafkaSetup(Arc::new(crate::kafka::KafkaSetupError::Thread {
            what: "Kafka log checker",
            source: e,
        }))
    })?;
    let now = Instant::now();
    let states = owned
        .iter()
        .map(|p| {
            let (offset, resume) = match plan.committed.get(p) {
                Some((o, r)) => (Some(*o), *r),
                None => (None, None),
            };
            PartitionState::new(*p, offset, resume, now)
        })
        .collect();
    let outbox = Outbox::default();
    let committer = Committer {
        consumer: connected.consumer,
        output: output.clone(),
        group: config.group.clone(),
        topic: topic.clone(),
        parts: states,
        dead: outbox.tracker().clone(),
        checkpoints: Arc::default(),
        durable,
        resume_ms: plan.resume_ms,
        last_open_ms: 0,
        input_ended: false,
        last_commit: now,
        warned: None,
        generation: output.generation(),
    };
    let reader = Reader {
        resume_skip: plan.resume_ms.saturating_sub(RETAIN_MS),
        ctx,
        config,
        plan,
        output,
        brokers,
        queues: connected.queues,
        view: connected.view,
        checks,
        outbox,
        activator,
        topic: Arc::from(topic.as_str()),
        watermark: 0,
        batch: Vec::new(),
        queue_warned: None,
        starts: Vec::new(),
        outages_seen: 0,
        recheck: Default::default(),
    };
    Ok((reader, committer))
}
