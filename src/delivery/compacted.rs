//! Reading a compacted topic to its end at start: the checkpoint topic and the ML state
//! topic are both "latest record per key" tables that a run loads before its workers
//! start.
//!
//! The reader takes every partition from its low watermark to the high watermark it saw
//! when it started, so what arrives while it reads is left for later, and it never waits
//! for a partition that is empty. Long reads log their progress every few seconds.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::kafka::{KafkaSettings, KafkaSetupError};

/// How often a long read logs how far it is.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Reads `topic` from its beginning to its current end and hands every record to `each`,
/// in offset order per partition. `reader_group` names the throwaway consumer (it commits
/// nothing). `timeout` bounds each request, and the wait for the next record: a long read
/// that keeps making progress is never cut short.
pub fn read_to_end(
    settings: &KafkaSettings,
    topic: &str,
    reader_group: &str,
    timeout: Duration,
    mut each: impl FnMut(&BorrowedMessage<'_>),
) -> Result<u64, KafkaSetupError> {
    let mut cfg = settings.client_config();
    cfg.set("group.id", reader_group);
    cfg.set("enable.auto.commit", "false");
    settings.apply_user_options(&mut cfg);
    let request = |what: &str| {
        let what = format!("{what} of {topic}");
        move |source| KafkaSetupError::Request {
            what,
            brokers: settings.brokers.clone(),
            source: Box::new(source),
        }
    };
    let consumer: BaseConsumer = cfg.create().map_err(|source| KafkaSetupError::Client {
        what: "compacted topic reader",
        brokers: settings.brokers.clone(),
        source: Box::new(source),
    })?;
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(request("reading metadata"))?;
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    let mut total = 0i64;
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = consumer
            .fetch_watermarks(topic, p.id(), timeout)
            .map_err(request("reading the end"))?;
        if high > low {
            ends.insert(p.id(), high);
            total += high - low;
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(low))
                .map_err(request("assigning"))?;
        }
    }
    if ends.is_empty() {
        return Ok(0);
    }
    consumer.assign(&tpl).map_err(request("assigning"))?;
    let started = Instant::now();
    let mut deadline = started + timeout;
    let mut next_progress = started + PROGRESS_EVERY;
    let mut read = 0u64;
    while !ends.is_empty() {
        let now = Instant::now();
        if now > deadline {
            return Err(KafkaSetupError::Request {
                what: format!("reading {topic} to its end ({read} of about {total} records read)"),
                brokers: settings.brokers.clone(),
                source: Box::new(rdkafka::error::KafkaError::MessageConsumption(
                    rdkafka::error::RDKafkaErrorCode::RequestTimedOut,
                )),
            });
        }
        if now >= next_progress {
            next_progress = now + PROGRESS_EVERY;
            tracing::info!(topic, read, of = total, "reading to the end");
        }
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = result.map_err(request("reading"))?;
        deadline = Instant::now() + timeout;
        let Some(&end) = ends.get(&message.partition()) else {
            continue;
        };
        if message.offset() >= end {
            ends.remove(&message.partition());
            continue;
        }
        read += 1;
        each(&message);
        if message.offset() + 1 >= end {
            ends.remove(&message.partition());
        }
    }
    Ok(read)
}
