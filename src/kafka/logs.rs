//! librdkafka's own logs and error callbacks, made fit for an operator.
//!
//! Left alone, every client logs every failed reconnect and raises a "global error" for
//! it: a dozen lines a second from one broker outage, which bury everything else. The
//! broker watch ([`super::watch`]) reports outages once, so connection failures go to
//! `debug` here; anything else librdkafka warns about is logged once per kind per
//! [`REPEAT_AFTER`], with the number of repeats suppressed in between.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

/// The same kind of message is logged again at most this often.
pub const REPEAT_AFTER: Duration = Duration::from_secs(60);

/// Last time each kind was logged, and how many were suppressed since.
fn seen() -> &'static Mutex<HashMap<String, (Instant, u64)>> {
    static SEEN: OnceLock<Mutex<HashMap<String, (Instant, u64)>>> = OnceLock::new();
    SEEN.get_or_init(Mutex::default)
}

/// `Some(suppressed since the last time)` when `kind` may be logged now.
fn allow(kind: &str) -> Option<u64> {
    let mut seen = seen().lock().unwrap_or_else(|p| p.into_inner());
    match seen.get_mut(kind) {
        Some((at, suppressed)) if at.elapsed() < REPEAT_AFTER => {
            *suppressed += 1;
            None
        }
        Some((at, suppressed)) => {
            let n = *suppressed;
            (*at, *suppressed) = (Instant::now(), 0);
            Some(n)
        }
        None => {
            seen.insert(kind.to_owned(), (Instant::now(), 0));
            Some(0)
        }
    }
}

/// Whether an error code only says a connection failed: the watch's business.
fn transport(code: Option<RDKafkaErrorCode>) -> bool {
    matches!(
        code,
        Some(
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::OperationTimedOut
        )
    )
}

/// For `ClientContext::log`.
pub fn log(level: RDKafkaLogLevel, fac: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical => {
            tracing::error!(target: "librdkafka", facility = fac, "{message}");
        }
        RDKafkaLogLevel::Error | RDKafkaLogLevel::Warning if fac != "FAIL" => {
            if let Some(suppressed) = allow(fac) {
                tracing::warn!(target: "librdkafka", facility = fac, suppressed, "{message}");
            }
        }
        _ => tracing::debug!(target: "librdkafka", facility = fac, "{message}"),
    }
}

/// For `ClientContext::error`.
pub fn error(error: &KafkaError, reason: &str) {
    let code = error.rdkafka_error_code();
    if transport(code) {
        tracing::debug!(target: "librdkafka", %error, reason, "client error");
        return;
    }
    if let Some(suppressed) = allow(&format!("{code:?}")) {
        tracing::warn!(target: "librdkafka", %error, reason, suppressed, "client error");
    }
}

/// A client context that only routes librdkafka's logs and errors through [`log`] and
/// [`error`], for clients that need no other callback.
pub struct Quiet;

impl rdkafka::ClientContext for Quiet {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log(level, fac, message);
    }
    fn error(&self, e: KafkaError, reason: &str) {
        error(&e, reason);
    }
}

impl rdkafka::consumer::ConsumerContext for Quiet {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_is_let_through_once_per_interval() {
        assert_eq!(allow("test-kind"), Some(0));
        assert_eq!(allow("test-kind"), None);
        assert_eq!(allow("test-kind"), None);
        assert_eq!(allow("other-kind"), Some(0));
        assert!(transport(Some(RDKafkaErrorCode::AllBrokersDown)));
        assert!(!transport(Some(RDKafkaErrorCode::TopicAuthorizationFailed)));
    }
}
