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
use std::time::Duration;

use rdkafka::Message;

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
    let prefix = format!("{group}|{topic}|");
    let mut latest = HashMap::new();
    // A throwaway reader: no group offsets of its own.
    let reader = format!("{group}-checkpoint-reader");
    super::compacted::read_to_end(settings, &settings.topics.checkpoints, &reader, timeout, |message| {
        let key = message.key().and_then(|k| std::str::from_utf8(k).ok());
        let Some(partition) = key.and_then(|k| k.strip_prefix(&prefix)).and_then(|p| p.parse().ok()) else {
            return;
        };
        if let Some(value) = message
            .payload()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(decode)
        {
            latest.insert(partition, value);
        }
    })?;
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
