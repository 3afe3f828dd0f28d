//! The librdkafka settings `--kafka-option` may not override.
//!
//! User options are applied last (see [`KafkaSettings::apply_user_options`]), so that
//! SASL/SSL settings and tuning always reach librdkafka. That also means an option could
//! silently undo a setting the delivery protocol depends on: auto-commit would commit
//! offsets ahead of the durable frontier, a finite message timeout would drop windows
//! during an outage, and so on. This module names those settings, each with the reason,
//! and [`check`] refuses them when the flags are validated, before anything connects.
//!
//! The rule is a pure function over a table so that the table is the documentation: to
//! make a new correctness setting in a client, add its key here in the same commit.
//! Keys are compared after trimming and lowercasing (librdkafka's names are lowercase),
//! so `Enable.Auto.Commit` or ` acks ` cannot slip past. librdkafka's aliases
//! (`acks`/`request.required.acks`, `delivery.timeout.ms`/`message.timeout.ms`, …) are
//! listed under both names.
//!
//! [`KafkaSettings::apply_user_options`]: super::KafkaSettings::apply_user_options

use std::fmt;

/// A librdkafka key that `--kafka-option` may not set, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reserved {
    /// The key, lowercase, as librdkafka spells it.
    pub key: &'static str,
    /// What breaks when it is overridden.
    pub reason: &'static str,
    /// The flag that sets it properly, where one exists.
    pub instead: Option<&'static str>,
}

const AUTO_COMMIT: &str = "the Kafka source commits offsets by hand, only behind the durable frontier; \
     automatic commits would skip unprocessed readings after a crash";
const IDEMPOTENCE: &str = "the producers are idempotent so that retries neither duplicate nor reorder records; \
     this setting would weaken or disable that";
const TIMEOUT: &str = "the output producer retries until the broker acknowledges (an outage becomes backpressure); \
     a finite timeout would drop windows";
const RETRIES: &str = "idempotent delivery needs librdkafka's retries; limiting them drops records on transient errors";
const BROKERS: &str = "the bootstrap servers come from --brokers";
const OFFSET_RESET: &str = "where partitions without a committed offset start is chosen by flag";

/// Every key the delivery protocol depends on. Sorted by key; aliases listed separately.
pub const RESERVED: &[Reserved] = &[
    Reserved {
        key: "acks",
        reason: IDEMPOTENCE,
        instead: None,
    },
    Reserved {
        key: "auto.offset.reset",
        reason: OFFSET_RESET,
        instead: Some("--from-beginning or --from-latest"),
    },
    Reserved {
        key: "bootstrap.servers",
        reason: BROKERS,
        instead: Some("--brokers"),
    },
    Reserved {
        key: "delivery.timeout.ms",
        reason: TIMEOUT,
        instead: None,
    },
    Reserved {
        key: "enable.auto.commit",
        reason: AUTO_COMMIT,
        instead: None,
    },
    Reserved {
        key: "enable.auto.offset.store",
        reason: AUTO_COMMIT,
        instead: None,
    },
    Reserved {
        key: "enable.idempotence",
        reason: IDEMPOTENCE,
        instead: None,
    },
    Reserved {
        key: "enable.partition.eof",
        reason: "the source treats every queue event as a record or a fault; end-of-partition events \
                 would be logged as consumer errors and cut reads short (the end is known from statistics)",
        instead: None,
    },
    Reserved {
        key: "group.id",
        reason: "the consumer group holds the committed resume offsets and names the checkpoint reader",
        instead: Some("--group"),
    },
    Reserved {
        key: "isolation.level",
        reason: "the source reads committed records only; read_uncommitted would feed it records \
                 that a transactional producer later aborted",
        instead: None,
    },
    Reserved {
        key: "max.in.flight",
        reason: IDEMPOTENCE,
        instead: None,
    },
    Reserved {
        key: "max.in.flight.requests.per.connection",
        reason: IDEMPOTENCE,
        instead: None,
    },
    Reserved {
        key: "message.send.max.retries",
        reason: RETRIES,
        instead: None,
    },
    Reserved {
        key: "message.timeout.ms",
        reason: TIMEOUT,
        instead: None,
    },
    Reserved {
        key: "metadata.broker.list",
        reason: BROKERS,
        instead: Some("--brokers"),
    },
    Reserved {
        key: "request.required.acks",
        reason: IDEMPOTENCE,
        instead: None,
    },
    Reserved {
        key: "retries",
        reason: RETRIES,
        instead: None,
    },
    Reserved {
        key: "statistics.interval.ms",
        reason: "the Kafka source learns each partition's end from statistics every second; \
                 it drives idleness, lag, rewind detection and --stop-at-end",
        instead: None,
    },
    Reserved {
        key: "transactional.id",
        reason: "the producers are idempotent, not transactional; a transactional id makes every \
                 send fail until transactions are begun, which the program never does",
        instead: None,
    },
];

/// The table entry for `key`, compared trimmed and lowercase; `None` when it may pass.
pub fn reserved(key: &str) -> Option<&'static Reserved> {
    let key = key.trim().to_ascii_lowercase();
    RESERVED.iter().find(|r| r.key == key)
}

/// The `--kafka-option` keys that were refused, in the order given.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused(pub Vec<(String, &'static Reserved)>);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (given, rule)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{given:?} cannot be overridden: {}", rule.reason)?;
            if let Some(flag) = rule.instead {
                write!(f, " (use {flag})")?;
            }
        }
        Ok(())
    }
}

/// Refuses every option whose key the delivery protocol depends on, naming all of them
/// at once so that a user fixes a command line in one go.
pub fn check(options: &[(String, String)]) -> Result<(), Refused> {
    let refused: Vec<_> = options
        .iter()
        .filter_map(|(key, _)| reserved(key).map(|rule| (key.clone(), rule)))
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(Refused(refused))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(keys: &[&str]) -> Vec<(String, String)> {
        keys.iter().map(|k| ((*k).to_owned(), "x".to_owned())).collect()
    }

    #[test]
    fn the_table_is_sorted_lowercase_and_without_duplicates() {
        for pair in RESERVED.windows(2) {
            assert!(pair[0].key < pair[1].key, "{} before {}", pair[0].key, pair[1].key);
        }
        for r in RESERVED {
            assert_eq!(r.key, r.key.trim().to_ascii_lowercase());
        }
    }

    #[test]
    fn correctness_keys_are_refused_with_their_reason_and_flag() {
        for key in [
            "enable.auto.commit",
            "enable.auto.offset.store",
            "enable.idempotence",
            "message.timeout.ms",
            "delivery.timeout.ms",
            "acks",
            "request.required.acks",
            "max.in.flight.requests.per.connection",
            "retries",
            "enable.partition.eof",
            "statistics.interval.ms",
            "group.id",
            "auto.offset.reset",
            "bootstrap.servers",
            "metadata.broker.list",
            "isolation.level",
            "transactional.id",
        ] {
            assert!(reserved(key).is_some(), "{key} should be refused");
        }
        let err = check(&opts(&["group.id"])).unwrap_err().to_string();
        assert!(err.contains("\"group.id\"") && err.contains("use --group"), "{err}");
        let err = check(&opts(&["message.timeout.ms"])).unwrap_err().to_string();
        assert!(err.contains("drop windows") && !err.contains("(use"), "{err}");
    }

    #[test]
    fn case_and_whitespace_do_not_slip_past() {
        for key in [
            "Enable.Auto.Commit",
            " enable.auto.commit",
            "enable.auto.commit\t",
            "ACKS",
        ] {
            assert!(reserved(key).is_some(), "{key:?}");
        }
    }

    #[test]
    fn security_and_tuning_pass_through() {
        let ok = opts(&[
            "security.protocol",
            "sasl.mechanism",
            "sasl.username",
            "sasl.password",
            "ssl.ca.location",
            "ssl.certificate.location",
            "linger.ms",
            "compression.type",
            "queue.buffering.max.kbytes",
            "queued.max.messages.kbytes",
            "client.id",
        ]);
        assert_eq!(check(&ok), Ok(()));
    }

    #[test]
    fn every_refused_key_is_named_in_order() {
        let err = check(&opts(&["linger.ms", "acks", "security.protocol", "Enable.Idempotence"])).unwrap_err();
        let keys: Vec<&str> = err.0.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["acks", "Enable.Idempotence"]);
        let text = err.to_string();
        assert!(
            text.contains("\"acks\"") && text.contains("\"Enable.Idempotence\""),
            "{text}"
        );
    }
}
