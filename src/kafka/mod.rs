//! Kafka connection settings shared by the source, the sinks and `produce`.
//!
//! Every librdkafka client of the program starts from [`KafkaSettings::client_config`]:
//! the bootstrap servers, then the user's `--kafka-option key=value` pairs. Settings the
//! code needs for correctness (manual commits, idempotence) are applied by the component
//! that needs them, each with a comment saying why; user options are applied last by
//! [`KafkaSettings::apply_user_options`] so SASL/SSL and tuning always pass through. The
//! options those settings depend on are refused when the flags are validated
//! ([`reserved`]), so applying user options last can never undo them.

pub mod logs;
pub mod reserved;
pub mod watch;

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// A Kafka operation failed. The message names the operation and the broker.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    /// librdkafka refused a setting or could not create a client.
    #[error("kafka: cannot create {what} for {brokers}")]
    Client {
        /// Which client.
        what: &'static str,
        /// The bootstrap servers.
        brokers: String,
        /// librdkafka's error (boxed: it is large, and errors travel far).
        #[source]
        source: Box<KafkaError>,
    },
    /// A metadata or offset request failed (broker unreachable, unknown topic, …).
    #[error("kafka: {what} failed against {brokers}")]
    Request {
        /// What was asked.
        what: String,
        /// The bootstrap servers.
        brokers: String,
        /// librdkafka's error (boxed: it is large, and errors travel far).
        #[source]
        source: Box<KafkaError>,
    },
    /// A helper thread (the broker watch, a source's log checker) could not be started.
    #[error("cannot start the {what} thread")]
    Thread {
        /// Which thread.
        what: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A Kafka source without brokers to read from.
    #[error("--source kafka needs --brokers (or WEATHERFLOW_BROKERS)")]
    NoBrokers,
    /// The topic exists but has no partitions, or does not exist.
    #[error("kafka: topic {topic:?} does not exist on {brokers} (create it, e.g. with `weatherflow produce`)")]
    NoTopic {
        /// The topic.
        topic: String,
        /// The bootstrap servers.
        brokers: String,
    },
}

/// The four topics of the system (docs/design.md §1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    /// Raw readings in.
    pub raw: String,
    /// Window features out.
    pub features: String,
    /// Predictions out.
    pub predictions: String,
    /// Dead letters: invalid raw messages with their reason.
    pub dlq: String,
    /// The Kafka source's resume points (see `delivery::checkpoint`).
    pub checkpoints: String,
    /// The predictor's station states (see `ml::snapshot`), compacted.
    pub state: String,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            raw: "weather-raw".into(),
            features: "weather-features".into(),
            predictions: "weather-predictions".into(),
            dlq: "weather-raw-dlq".into(),
            checkpoints: "weatherflow-checkpoints".into(),
            state: "weatherflow-state".into(),
        }
    }
}

impl Topics {
    /// Every name, for topic creation.
    pub fn all(&self) -> [&str; 6] {
        [
            &self.raw,
            &self.features,
            &self.predictions,
            &self.dlq,
            &self.checkpoints,
            &self.state,
        ]
    }
}

/// Where the brokers are and how to talk to them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSettings {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// `--kafka-option` pairs, in the order given.
    pub options: Vec<(String, String)>,
    /// Topic names.
    pub topics: Topics,
}

/// Parses one `--kafka-option key=value`.
pub fn parse_option(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("{text:?} is not key=value (e.g. security.protocol=SASL_SSL)")),
    }
}

impl KafkaSettings {
    /// A base configuration: bootstrap servers only. Callers add their own settings and
    /// then [`apply_user_options`](Self::apply_user_options).
    pub fn client_config(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.brokers);
        cfg
    }

    /// Applies `--kafka-option` pairs last, so they override the code's tuning. Keys the
    /// delivery protocol depends on never get here: [`reserved::check`] refused them.
    pub fn apply_user_options(&self, cfg: &mut ClientConfig) {
        for (k, v) in &self.options {
            cfg.set(k, v);
        }
    }

    /// Creates the topics among `names` that do not exist yet, with `partitions`
    /// partitions each. Returns the names actually created; existing topics are left as
    /// they are.
    pub fn ensure_topics(
        &self,
        names: &[&str],
        partitions: i32,
        timeout: Duration,
    ) -> Result<Vec<String>, KafkaSetupError> {
        let mut cfg = self.client_config();
        self.apply_user_options(&mut cfg);
        let admin: AdminClient<DefaultClientContext> = cfg.create().map_err(|source| KafkaSetupError::Client {
            what: "admin client",
            brokers: self.brokers.clone(),
            source: Box::new(source),
        })?;
        let new: Vec<NewTopic<'_>> = names
            .iter()
            .map(|&name| {
                let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
                // Only the latest checkpoint (or station state) per key matters.
                if name == self.topics.checkpoints || name == self.topics.state {
                    topic.set("cleanup.policy", "compact")
                } else {
                    topic
                }
            })
            .collect();
        let options = AdminOptions::new().operation_timeout(Some(timeout));
        let request = |source| KafkaSetupError::Request {
            what: "creating topics".into(),
            brokers: self.brokers.clone(),
            source: Box::new(source),
        };
        let results = futures::executor::block_on(admin.create_topics(&new, &options)).map_err(request)?;
        let mut created = Vec::new();
        for result in results {
            match result {
                Ok(name) => created.push(name),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => {
                    return Err(KafkaSetupError::Request {
                        what: format!("creating topic {name:?}"),
                        brokers: self.brokers.clone(),
                        source: Box::new(KafkaError::AdminOp(code)),
                    });
                }
            }
        }
        Ok(created)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_override_in_order() {
        assert_eq!(parse_option("a.b=c=d").unwrap(), ("a.b".into(), "c=d".into()));
        assert_eq!(parse_option("linger.ms=").unwrap(), ("linger.ms".into(), String::new()));
        assert!(parse_option("=x").is_err());
        assert!(parse_option("novalue").is_err());
        let settings = KafkaSettings {
            brokers: "h:1".into(),
            options: vec![("linger.ms".into(), "7".into()), ("client.id".into(), "x".into())],
            topics: Topics::default(),
        };
        let mut cfg = settings.client_config();
        cfg.set("linger.ms", "20");
        settings.apply_user_options(&mut cfg);
        assert_eq!(cfg.get("linger.ms"), Some("7"));
        assert_eq!(cfg.get("client.id"), Some("x"));
        assert_eq!(cfg.get("bootstrap.servers"), Some("h:1"));
    }
}
