//! The Kafka source's start: the topic's partitions and where each resumes.

use std::collections::HashMap;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::partition::PartitionState;
use super::{KafkaSourceConfig, SETUP_TIMEOUT};
use crate::delivery::checkpoint;
use crate::delivery::checkpoint::Resume;
use crate::kafka::{KafkaSettings, KafkaSetupError};

/// The topic's partitions and where each resumes, read once per process before the
/// workers start, so that every worker of every process sees the same picture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaPlan {
    /// All partitions of the topic.
    pub partitions: Vec<i32>,
    /// Committed offset and, for commits made by this program, its resume metadata.
    pub committed: HashMap<i32, (i64, Option<Resume>)>,
    /// Windows ending before this were acknowledged by an earlier run (ms; 0 = none).
    pub resume_ms: u64,
    /// With `--stop-at-end`: per partition, its (low, high) offsets when the run started.
    /// Reading up to `high` is "the end"; what arrives later is left for the next run.
    pub end_offsets: HashMap<i32, (i64, i64)>,
}

impl KafkaPlan {
    /// Reads the topic's partitions and, per partition, the latest checkpoint or else the
    /// group's committed offset.
    pub fn prepare(settings: &KafkaSettings, cfg: &KafkaSourceConfig) -> Result<Self, KafkaSetupError> {
        let topic = &settings.topics.raw;
        let created = settings.ensure_topics(&[&settings.topics.checkpoints], 1, SETUP_TIMEOUT)?;
        if !created.is_empty() {
            tracing::info!(topic = %settings.topics.checkpoints, "created checkpoint topic");
        }
        let checkpoints = checkpoint::read_latest(settings, &cfg.group, topic, SETUP_TIMEOUT)?;
        let mut client = settings.client_config();
        client.set("group.id", &cfg.group);
        settings.apply_user_options(&mut client);
        let consumer: BaseConsumer = client.create().map_err(|source| KafkaSetupError::Client {
            what: "consumer",
            brokers: settings.brokers.clone(),
            source: Box::new(source),
        })?;
        let request = |what: &str| {
            let what = what.to_owned();
            move |source| KafkaSetupError::Request {
                what,
                brokers: settings.brokers.clone(),
                source: Box::new(source),
            }
        };
        let metadata = consumer
            .fetch_metadata(Some(topic), SETUP_TIMEOUT)
            .map_err(request("fetching topic metadata"))?;
        let mut partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == topic && t.error().is_none())
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        partitions.sort_unstable();
        if partitions.is_empty() {
            return Err(KafkaSetupError::NoTopic {
                topic: topic.clone(),
                brokers: settings.brokers.clone(),
            });
        }
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition(topic, *p);
        }
        let committed_list = consumer
            .committed_offsets(tpl, SETUP_TIMEOUT)
            .map_err(request("reading committed offsets"))?;
        let mut committed = HashMap::new();
        for elem in committed_list.elements_for_topic(topic) {
            if let Offset::Offset(o) = elem.offset() {
                committed.insert(elem.partition(), (o, Resume::decode(elem.metadata())));
            }
        }
        // A checkpoint carries its offset and state together; it wins over a bare offset.
        for (p, (offset, resume)) in checkpoints {
            if partitions.contains(&p) {
                committed.insert(p, (offset, Some(resume)));
            }
        }
        let resume_ms = committed
            .values()
            .filter_map(|(_, r)| r.map(|r| r.durable_ms))
            .max()
            .unwrap_or(0);
        let mut end_offsets = HashMap::new();
        if cfg.stop_at_end {
            for p in &partitions {
                let ends = consumer
                    .fetch_watermarks(topic, *p, SETUP_TIMEOUT)
                    .map_err(request(&format!("reading the end offset of partition {p}")))?;
                end_offsets.insert(*p, ends);
            }
        }
        Ok(KafkaPlan {
            partitions,
            committed,
            resume_ms,
            end_offsets,
        })
    }

    /// Whether every partition in `parts` has been read up to its end offset. A partition
    /// without data (high = low) is at its end before anything is read.
    pub fn reached_end(&self, parts: &[PartitionState]) -> bool {
        parts.iter().all(|p| match self.end_offsets.get(&p.id) {
            Some(&(low, high)) => high <= low || p.next_offset.is_some_and(|next| next >= high),
            None => true,
        })
    }

    /// The partitions global worker `index` of `peers` owns.
    pub fn owned_by(&self, index: usize, peers: usize) -> Vec<i32> {
        self.partitions
            .iter()
            .copied()
            .filter(|p| (*p as usize) % peers == index)
            .collect()
    }
}
