//! The errors that stop a run from inside the dataflow, and whether a retry can help.
//!
//! Operators cannot return errors: they run inside timely's scheduler. One that meets an
//! error it must not continue past (continuing would lose or corrupt data) records it in
//! the process's [`FailureSlot`]; the run loop stops every worker when the slot is set, and
//! [`crate::run::run`] returns the first error recorded. Only the first is kept: the rest
//! are usually its consequences (a purge at exit fails every queued record).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rdkafka::error::KafkaError;

use crate::kafka::KafkaSetupError;
use crate::sinks::file::SinkError;

/// Whether running again can get past an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Not until someone changes something: a path, a permission, a topic's limits, a
    /// setting. A supervisor restarting the run would only fail the same way.
    AfterFix,
    /// A restart can succeed: the cause lies outside the program (a broker that lost its
    /// log, an unreachable cluster, a transient I/O error). The restart resumes from the
    /// last checkpoint, so nothing is lost.
    Restart,
}

/// An error that stops the run.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Fatal {
    /// An input file could not be opened or read.
    #[error("cannot read input {path}")]
    Input {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// An output file could not be written.
    #[error(transparent)]
    Output(Arc<SinkError>),
    /// A worker's Kafka client could not be created or assigned its partitions.
    #[error(transparent)]
    KafkaSetup(Arc<KafkaSetupError>),
    /// librdkafka refused a record for a reason retrying cannot fix.
    #[error("kafka: cannot send to {topic}")]
    Send {
        /// The topic.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// The broker refused a record permanently (too large, not authorised, …). With
    /// infinite retries only such errors are reported, and the record is lost unless the
    /// run stops, so it stops and commits nothing past it.
    #[error("kafka: delivery to {topic} failed permanently")]
    Delivery {
        /// The topic.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// A partition whose log was replaced could not be rewound.
    #[error("kafka: cannot rewind partition {partition} of {topic}")]
    Rewind {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// Output stayed unacknowledged while the brokers answered (a broker lost its log),
    /// and no new producer could be created to send it again.
    #[error(
        "kafka: {in_flight} records unacknowledged for {secs}s although the brokers answer, and the \
         producer cannot be recreated. Stopping, so that a restart resumes from the last checkpoint"
    )]
    ProducerStuck {
        /// Records in flight.
        in_flight: i32,
        /// How long nothing was acknowledged, s.
        secs: u64,
        /// Why the producer could not be recreated.
        #[source]
        source: Arc<KafkaSetupError>,
    },
}

impl Fatal {
    /// Whether a retry can help.
    pub fn retry(&self) -> Retry {
        use std::io::ErrorKind as K;
        let io = |e: &std::io::Error| match e.kind() {
            K::NotFound | K::PermissionDenied | K::InvalidInput | K::InvalidData | K::IsADirectory => Retry::AfterFix,
            _ => Retry::Restart,
        };
        match self {
            Fatal::Input { source, .. } => io(source),
            Fatal::Output(e) => match e.as_ref() {
                SinkError::Create { source, .. } | SinkError::Write { source, .. } => io(source),
            },
            Fatal::KafkaSetup(e) => match e.as_ref() {
                KafkaSetupError::Client { .. } | KafkaSetupError::NoTopic { .. } | KafkaSetupError::NoBrokers => {
                    Retry::AfterFix
                }
                KafkaSetupError::Request { .. } | KafkaSetupError::Thread { .. } => Retry::Restart,
            },
            Fatal::Send { .. } | Fatal::Delivery { .. } => Retry::AfterFix,
            Fatal::Rewind { .. } | Fatal::ProducerStuck { .. } => Retry::Restart,
        }
    }
}

/// The first fatal error of a process, shared by its workers, its Kafka callbacks and its
/// run loop.
#[derive(Clone, Debug, Default)]
pub struct FailureSlot(Arc<OnceLock<Fatal>>);

impl FailureSlot {
    /// Records `fatal` unless an error was recorded already; logs it once either way
    /// (the first at error level, later ones at debug: they are usually consequences).
    pub fn set(&self, fatal: Fatal) {
        let text = crate::error::chain(&fatal);
        if self.0.set(fatal).is_ok() {
            tracing::error!(error = %text, "fatal");
        } else {
            tracing::debug!(error = %text, "another fatal error after the first");
        }
    }

    /// The first error, if any.
    pub fn get(&self) -> Option<&Fatal> {
        self.0.get()
    }

    /// Whether an error was recorded.
    pub fn is_set(&self) -> bool {
        self.0.get().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_failure_is_kept_and_retry_follows_the_cause() {
        let slot = FailureSlot::default();
        assert!(!slot.is_set());
        let missing = Fatal::Input {
            path: "a.jsonl".into(),
            source: Arc::new(std::io::Error::from(std::io::ErrorKind::NotFound)),
        };
        slot.set(missing);
        slot.set(Fatal::Input {
            path: "b.jsonl".into(),
            source: Arc::new(std::io::Error::from(std::io::ErrorKind::Interrupted)),
        });
        let first = slot.clone();
        assert!(matches!(first.get(), Some(Fatal::Input { path, .. }) if path.as_os_str() == "a.jsonl"));
        assert_eq!(first.get().map(Fatal::retry), Some(Retry::AfterFix));
        let eof = Fatal::Input {
            path: "c".into(),
            source: Arc::new(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
        };
        assert_eq!(eof.retry(), Retry::Restart);
    }
}
