//! Whether the brokers answer: the fact behind `/ready` during an outage, and the one
//! place that says in the log that Kafka went away and came back.
//!
//! librdkafka hides outages well: producers queue and retry, consumers reconnect, and a
//! paused (not crashed) broker keeps its TCP connections open, so no client error shows
//! up for a minute or more. The watch therefore asks an actual question: a metadata
//! request for the raw topic, every [`PROBE_INTERVAL`], that must be answered within
//! [`PROBE_TIMEOUT`]. Two failures in a row mark the brokers unreachable (one slow answer
//! is not an outage); the first success marks them reachable again. Each transition is
//! logged once, with how long the outage lasted; while it lasts, a reminder every
//! [`REMINDER`] at most.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::logs::Quiet;
use super::{KafkaSettings, KafkaSetupError};

/// Time between two probes.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a probe may wait for its answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Consecutive failed probes that make an outage.
const FAILURES_FOR_OUTAGE: u32 = 2;
/// At most one "still unreachable" line per this interval.
const REMINDER: Duration = Duration::from_secs(60);

/// The brokers' state as last probed; shared with `/ready`, the Kafka source and the
/// metrics.
#[derive(Debug)]
pub struct BrokerHealth {
    /// Epoch ms since when the brokers have not answered; 0 while they do.
    down_since_ms: AtomicU64,
    /// Outages seen since the start.
    outages: AtomicU64,
    /// When the brokers were last seen to come (back) up: the start, or an outage's end.
    up_since: Mutex<Instant>,
}

impl Default for BrokerHealth {
    fn default() -> Self {
        BrokerHealth {
            down_since_ms: AtomicU64::new(0),
            outages: AtomicU64::new(0),
            up_since: Mutex::new(Instant::now()),
        }
    }
}

impl BrokerHealth {
    /// `Err(why)` while the brokers are unreachable.
    pub fn check(&self) -> Result<(), String> {
        match self.down_since_ms.load(Ordering::Relaxed) {
            0 => Ok(()),
            since => Err(format!(
                "Kafka brokers unreachable for {}s",
                crate::schema::now_ms().saturating_sub(since) / 1000
            )),
        }
    }

    /// How long the brokers have been reachable without a break; `None` during an outage.
    pub fn stable_for(&self) -> Option<Duration> {
        if self.down_since_ms.load(Ordering::Relaxed) != 0 {
            return None;
        }
        Some(self.up_since.lock().unwrap_or_else(|p| p.into_inner()).elapsed())
    }

    /// Outages seen since the start.
    pub fn outages(&self) -> u64 {
        self.outages.load(Ordering::Relaxed)
    }
}

/// The probing thread; stops when dropped.
pub struct BrokerWatch {
    health: Arc<BrokerHealth>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BrokerWatch {
    /// Starts probing the brokers of `settings` for the metadata of `topic`.
    pub fn start(settings: &KafkaSettings, topic: &str) -> Result<BrokerWatch, KafkaSetupError> {
        let mut cfg: ClientConfig = settings.client_config();
        settings.apply_user_options(&mut cfg);
        // The watch does the reporting; its client stays quiet.
        let client: BaseConsumer<Quiet> = cfg
            .create_with_context(Quiet)
            .map_err(|source| KafkaSetupError::Client {
                what: "broker watch",
                brokers: settings.brokers.clone(),
                source: Box::new(source),
            })?;
        let health = Arc::new(BrokerHealth::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s, topic) = (health.clone(), stop.clone(), topic.to_owned());
        let brokers = settings.brokers.clone();
        let thread = std::thread::Builder::new()
            .name("broker-watch".into())
            .spawn(move || probe_loop(&client, &topic, &brokers, &h, &s))
            .map_err(|source| KafkaSetupError::Thread {
                what: "Kafka broker watch",
                source,
            })?;
        Ok(BrokerWatch {
            health,
            stop,
            thread: Some(thread),
        })
    }

    /// The shared state.
    pub fn health(&self) -> Arc<BrokerHealth> {
        self.health.clone()
    }
}

impl Drop for BrokerWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Not joined: a probe may be waiting up to PROBE_TIMEOUT on a broker that does not
        // answer, and a stopping run must not wait for it. The thread ends after that probe.
        drop(self.thread.take());
    }
}

/// How long output may stay unacknowledged, with the brokers answering all along,
/// before the producer counts as stuck, unless `--stall-timeout` says otherwise.
pub const STALL_AFTER: Duration = Duration::from_secs(60);

/// Notices a producer that the brokers no longer acknowledge although they answer: what
/// an idempotent producer does after a broker lost its log (its producer id and sequence
/// numbers are unknown there, and librdkafka retries forever). Retrying on would hang the
/// run silently with the durable frontier frozen; the run recreates the producer instead
/// ([`crate::delivery::KafkaOutput::recreate`]).
#[derive(Debug)]
pub struct OutputStall {
    /// The acknowledgement count last seen, and since when it has not moved.
    last: Option<(u64, Instant)>,
    /// How long is a stall (`--stall-timeout`).
    after: Duration,
}

impl Default for OutputStall {
    fn default() -> Self {
        OutputStall::new(STALL_AFTER)
    }
}

impl OutputStall {
    /// A detector that calls `after` without acknowledgements a stall.
    pub fn new(after: Duration) -> Self {
        OutputStall { last: None, after }
    }

    /// Feeds one observation: records in flight, acknowledgements so far, and how long
    /// the brokers have answered without a break. Returns the reason to stop, if stuck.
    pub fn check(
        &mut self,
        in_flight: i32,
        acked: u64,
        stable_for: Option<Duration>,
        now: Instant,
    ) -> Option<Duration> {
        let since = match self.last {
            Some((count, since)) if count == acked && in_flight > 0 => since,
            _ => {
                self.last = Some((acked, now));
                return None;
            }
        };
        let waited = now.duration_since(since);
        let answering = stable_for.is_some_and(|d| d >= self.after);
        (waited >= self.after && answering).then_some(waited)
    }
}

fn probe_loop(client: &BaseConsumer<Quiet>, topic: &str, brokers: &str, health: &BrokerHealth, stop: &AtomicBool) {
    let mut failures = 0u32;
    let mut down: Option<(Instant, Instant)> = None; // (since, last reminder)
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        match client.fetch_metadata(Some(topic), PROBE_TIMEOUT) {
            Ok(_) => {
                failures = 0;
                if let Some((since, _)) = down.take() {
                    *health.up_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                    health.down_since_ms.store(0, Ordering::Relaxed);
                    tracing::info!(%brokers, outage_s = since.elapsed().as_secs_f64(), "Kafka reachable again; resuming");
                }
            }
            Err(e) => {
                failures += 1;
                match &mut down {
                    None if failures >= FAILURES_FOR_OUTAGE => {
                        let since_ms = crate::schema::now_ms().saturating_sub(started.elapsed().as_millis() as u64);
                        health.down_since_ms.store(since_ms.max(1), Ordering::Relaxed);
                        health.outages.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            %brokers,
                            error = %e,
                            "Kafka unreachable; output waits and retries, nothing is dropped, /ready answers 503"
                        );
                        down = Some((Instant::now(), Instant::now()));
                    }
                    Some((since, reminded)) if reminded.elapsed() >= REMINDER => {
                        tracing::warn!(%brokers, outage_s = since.elapsed().as_secs(), "Kafka still unreachable");
                        *reminded = Instant::now();
                    }
                    _ => {}
                }
            }
        }
        // Sleep out the rest of the interval in short steps, so a stop is prompt.
        while started.elapsed() < PROBE_INTERVAL && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_needs_in_flight_records_no_acks_and_answering_brokers() {
        let t0 = Instant::now();
        let later = t0 + STALL_AFTER + Duration::from_secs(1);
        let up = Some(STALL_AFTER * 2);
        let mut s = OutputStall::default();
        assert_eq!(s.check(5, 10, up, t0), None);
        assert!(s.check(5, 10, up, later).is_some(), "stuck");
        let mut s = OutputStall::default();
        s.check(5, 10, up, t0);
        assert_eq!(s.check(5, 11, up, later), None, "acks moved");
        let mut s = OutputStall::default();
        s.check(5, 10, None, t0);
        assert_eq!(s.check(5, 10, None, later), None, "an outage is not a stall");
        let mut s = OutputStall::default();
        s.check(0, 10, up, t0);
        assert_eq!(s.check(0, 10, up, later), None, "nothing in flight");
    }
}
