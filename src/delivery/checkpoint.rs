//! Checkpoints: each partition's resume point as a record in a topic of its own.
//!
//! The resume point is an offset plus the [`Resume`] state that makes a replay from it
//! exact. Kafka can carry that state as offset-commit metadata, but not every
//! Kafka-protocol broker keeps it (nisshi returns it empty), so the pipeline also writes
//! one small record per partition and commit to `--checkpoint-topic`, keyed by group,
//! topic and partition, and reads the latest per key on start. One record holds both the
//! offset and its state, so they can never disagree; group offsets are still committed
//! for the benefit of lag monitors. The topic should be compacted (`cleanup.policy=compact`)
//! on a real cluster; the pipeline creates it that way when it is missing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::kafka::{KafkaSettings, KafkaSetupError};

/// Where a partition resumes, as read from a commit made by this program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resume {
    /// The durable frontier when the commit was made, ms.
    pub durable_ms: u64,
    /// The largest event time before the committed offset, ms.
    pub max_event_ms: Option<u64>,
}

impl Resume {
    /// The commit metadata string.
    pub fn encode(&self) -> String {
        match self.max_event_ms {
            Some(m) => format!("weatherflow/1 durable={} max_event={m}", self.durable_ms),
            None => format!("weatherflow/1 durable={}", self.durable_ms),
        }
    }

    /// Reads metadata written by [`encode`](Self::encode); `None` for anything else
    /// (offsets committed by another tool).
    pub fn decode(text: &str) -> Option<Resume> {
        let rest = text.strip_prefix("weatherflow/1 ")?;
        let mut resume = Resume::default();
        let mut durable = None;
        for field in rest.split_whitespace() {
            match field.split_once('=')? {
                ("durable", v) => durable = Some(v.parse().ok()?),
                ("max_event", v) => resume.max_event_ms = Some(v.parse().ok()?),
                _ => {}
            }
        }
        resume.durable_ms = durable?;
        Some(resume)
    }
}

/// The record key of a partition's checkpoint.
pub fn key(group: &str, topic: &str, partition: i32) -> String {
    format!("{group}|{topic}|{partition}")
}

/// The record value: the offset and the resume state.
pub fn encode(offset: i64, resume: &Resume) -> String {
    format!("{} offset={offset}", resume.encode())
}

/// Reads a record value written by [`encode`].
pub fn decode(text: &str) -> Option<(i64, Resume)> {
    let resume = Resume::decode(text)?;
    let offset = text
        .split_whitespace()
        .find_map(|f| f.strip_prefix("offset="))?
        .parse()
        .ok()?;
    Some((offset, resume))
}

/// The latest checkpoint of every partition of `topic` for `group`.
pub fn read_latest(
    settings: &KafkaSettings,
    group: &str,
    topic: &str,
    timeout: Duration,
) -> Result<HashMap<i32, (i64, Resume)>, KafkaSetupError> {
    let checkpoints = &settings.topics.checkpoints;
    let mut cfg = settings.client_config();
    // A throwaway reader: no group offsets of its own.
    cfg.set("group.id", format!("{group}-checkpoint-reader"));
    cfg.set("enable.auto.commit", "false");
    settings.apply_user_options(&mut cfg);
    let request = |what: &str| {
        let what = format!("{what} of {checkpoints}");
        move |source| KafkaSetupError::Request {
            what,
            brokers: settings.brokers.clone(),
            source: Box::new(source),
        }
    };
    let consumer: BaseConsumer = cfg.create().map_err(|source| KafkaSetupError::Client {
        what: "checkpoint reader",
        brokers: settings.brokers.clone(),
        source: Box::new(source),
    })?;
    let metadata = consumer
        .fetch_metadata(Some(checkpoints), timeout)
        .map_err(request("reading metadata"))?;
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        let (low, high) = consumer
            .fetch_watermarks(checkpoints, p.id(), timeout)
            .map_err(request("reading the end"))?;
        if high > low {
            ends.insert(p.id(), high);
            tpl.add_partition_offset(checkpoints, p.id(), Offset::Offset(low))
                .map_err(request("assigning"))?;
        }
    }
    let mut latest = HashMap::new();
    if ends.is_empty() {
        return Ok(latest);
    }
    consumer.assign(&tpl).map_err(request("assigning"))?;
    let prefix = format!("{group}|{topic}|");
    let deadline = Instant::now() + timeout;
    let mut done: HashMap<i32, bool> = ends.keys().map(|p| (*p, false)).collect();
    while done.values().any(|d| !d) {
        if Instant::now() > deadline {
            return Err(KafkaSetupError::Request {
                what: format!("reading {checkpoints} to its end"),
                brokers: settings.brokers.clone(),
                source: Box::new(rdkafka::error::KafkaError::MessageConsumption(
                    rdkafka::error::RDKafkaErrorCode::RequestTimedOut,
                )),
            });
        }
        let Some(result) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = result.map_err(request("reading"))?;
        if message.offset() + 1 >= ends.get(&message.partition()).copied().unwrap_or(0) {
            done.insert(message.partition(), true);
        }
        let key = message.key().and_then(|k| std::str::from_utf8(k).ok());
        let Some(partition) = key.and_then(|k| k.strip_prefix(&prefix)).and_then(|p| p.parse().ok()) else {
            continue;
        };
        if let Some(value) = message
            .payload()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(decode)
        {
            latest.insert(partition, value);
        }
    }
    Ok(latest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_and_ignores_foreign_commits() {
        let r = Resume {
            durable_ms: 42 * 60_000,
            max_event_ms: Some(1234),
        };
        assert_eq!(Resume::decode(&r.encode()), Some(r));
        let none = Resume {
            durable_ms: 7,
            max_event_ms: None,
        };
        assert_eq!(Resume::decode(&none.encode()), Some(none));
        assert_eq!(Resume::decode(""), None);
        assert_eq!(Resume::decode("weatherflow/1 max_event=3"), None);
        assert_eq!(Resume::decode("weatherflow/1 durable=x"), None);
    }

    #[test]
    fn values_round_trip() {
        let r = Resume {
            durable_ms: 120_000,
            max_event_ms: Some(61_000),
        };
        assert_eq!(decode(&encode(42, &r)), Some((42, r)));
        assert_eq!(decode("weatherflow/1 durable=1"), None, "no offset");
        assert_eq!(key("g", "weather-raw", 3), "g|weather-raw|3");
    }
}
