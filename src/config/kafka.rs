//! The Kafka connection flags, shared by `run`, `produce` and `serve`.

use clap::Args;

use super::{ConfigError, invalid};
use crate::kafka::{KafkaSettings, Topics, parse_option};

/// Kafka connection flags, shared by `run` and `produce`.
#[derive(Clone, Debug, Args)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers (`host:port[,host:port]`). With `run` this also sends
    /// weather-features to Kafka; `--source kafka` needs it.
    #[arg(long, env = "WEATHERFLOW_BROKERS")]
    pub brokers: Option<String>,
    /// A librdkafka setting passed through unchanged (`key=value`, repeatable), e.g.
    /// `security.protocol=SASL_SSL`. Applied last, so it overrides the program's tuning;
    /// keys the delivery guarantees depend on (auto-commit, idempotence, timeouts, acks,
    /// group, …) are refused with the reason (`src/kafka/reserved.rs`).
    #[arg(long = "kafka-option", value_name = "KEY=VALUE", value_parser = parse_option)]
    pub kafka_options: Vec<(String, String)>,
    /// Topic of raw readings.
    #[arg(long, env = "WEATHERFLOW_TOPIC", default_value = "weather-raw")]
    pub topic: String,
    /// Topic of window features.
    #[arg(long, env = "WEATHERFLOW_FEATURES_TOPIC", default_value = "weather-features")]
    pub features_topic: String,
    /// Topic of predictions.
    #[arg(long, env = "WEATHERFLOW_PREDICTIONS_TOPIC", default_value = "weather-predictions")]
    pub predictions_topic: String,
    /// Dead-letter topic for invalid raw messages.
    #[arg(long, env = "WEATHERFLOW_DLQ_TOPIC", default_value = "weather-raw-dlq")]
    pub dlq_topic: String,
    /// Topic of the Kafka source's resume points (compacted).
    #[arg(
        long,
        env = "WEATHERFLOW_CHECKPOINT_TOPIC",
        default_value = "weatherflow-checkpoints"
    )]
    pub checkpoint_topic: String,
    /// Topic of the predictor's station states (compacted), written and restored by
    /// `run --source kafka` with the ML stage.
    #[arg(long, env = "WEATHERFLOW_STATE_TOPIC", default_value = "weatherflow-state")]
    pub state_topic: String,
}

impl KafkaArgs {
    /// The settings, when `--brokers` was given.
    pub fn into_settings(self) -> Result<Option<KafkaSettings>, ConfigError> {
        // Refused even without --brokers: an option that cannot take effect now would
        // surprise whoever adds --brokers later.
        crate::kafka::reserved::check(&self.kafka_options)
            .map_err(|refused| invalid("--kafka-option", refused.to_string()))?;
        let Some(brokers) = self.brokers.filter(|b| !b.trim().is_empty()) else {
            return Ok(None);
        };
        let topics = Topics {
            raw: self.topic,
            features: self.features_topic,
            predictions: self.predictions_topic,
            dlq: self.dlq_topic,
            checkpoints: self.checkpoint_topic,
            state: self.state_topic,
        };
        for (flag, name) in [
            ("--topic", &topics.raw),
            ("--features-topic", &topics.features),
            ("--predictions-topic", &topics.predictions),
            ("--dlq-topic", &topics.dlq),
            ("--checkpoint-topic", &topics.checkpoints),
            ("--state-topic", &topics.state),
        ] {
            if name.is_empty()
                || name.len() > 249
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(invalid(flag, format!("{name:?} is not a valid Kafka topic name")));
            }
        }
        Ok(Some(KafkaSettings {
            brokers,
            options: self.kafka_options,
            topics,
        }))
    }
}
