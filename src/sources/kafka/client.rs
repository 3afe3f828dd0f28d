//! A worker's consumer: its librdkafka callbacks, and the setup that assigns the worker's
//! partitions and splits one queue per partition.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use timely::scheduling::SyncActivator;

use super::{KafkaPlan, KafkaSourceConfig, StartOffset};
use crate::kafka::{KafkaSettings, KafkaSetupError};

/// Per-partition broker facts from librdkafka's statistics: (high watermark, fetch
/// position). Written by the statistics callback, read by the worker; each side holds the
/// lock for one map update or lookup, never across a request.
pub type BrokerView = Arc<Mutex<HashMap<i32, (i64, i64)>>>;

/// The split partition queues, in the order of the worker's partitions.
pub type Queues = Vec<PartitionQueue<SourceClient>>;

/// librdkafka callbacks of one worker's consumer.
pub struct SourceClient {
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

/// A worker's connected consumer.
pub struct Connected {
    /// The consumer, shared with the log checker's thread.
    pub consumer: Arc<BaseConsumer<SourceClient>>,
    /// One queue per owned partition.
    pub queues: Queues,
    /// What the statistics say about each partition.
    pub view: BrokerView,
}

/// Creates a worker's consumer, assigns its partitions at their resume offsets and
/// splits one queue per partition, each waking the operator when it fills.
pub fn connect(
    settings: &KafkaSettings,
    config: &KafkaSourceConfig,
    plan: &KafkaPlan,
    owned: &[i32],
    wake: SyncActivator,
) -> Result<Connected, KafkaSetupError> {
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
    Ok(Connected { consumer, queues, view })
}
