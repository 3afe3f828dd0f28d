//! Helpers for tests against the real Kafka-protocol broker of `scripts/test-broker.sh`.
//!
//! Tests that need it call [`brokers`]: without `WEATHERFLOW_TEST_BROKERS` they fail in CI
//! (`CI=true`) and skip with a notice elsewhere (docs/design.md §10). Every test uses its own
//! topics and consumer groups, so tests run in parallel against one broker.

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use weatherflow::kafka::{KafkaSettings, Topics};

use crate::common::spawn;

/// The broker address, or `None` (after a notice) when the tests should skip.
pub fn brokers() -> Option<String> {
    match std::env::var("WEATHERFLOW_TEST_BROKERS") {
        Ok(b) if !b.trim().is_empty() => Some(b),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but WEATHERFLOW_TEST_BROKERS is not set: .ci/run must start the test broker")
        }
        _ => {
            eprintln!("skipping: set WEATHERFLOW_TEST_BROKERS=$(scripts/test-broker.sh up) to run the Kafka tests");
            None
        }
    }
}

/// Fresh topic names for one test, created with `partitions` partitions each.
pub fn fresh_topics(brokers: &str, test: &str, partitions: i32) -> KafkaSettings {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let prefix = format!("t{}-{n}-{test}", std::process::id());
    let settings = KafkaSettings {
        brokers: brokers.to_owned(),
        options: Vec::new(),
        topics: Topics {
            raw: format!("{prefix}-raw"),
            features: format!("{prefix}-features"),
            predictions: format!("{prefix}-predictions"),
            dlq: format!("{prefix}-dlq"),
            checkpoints: format!("{prefix}-checkpoints"),
            state: format!("{prefix}-state"),
        },
    };
    let created = settings
        .ensure_topics(&settings.topics.all(), partitions, Duration::from_secs(20))
        .expect("create test topics");
    assert_eq!(created.len(), 6, "fresh topics are new");
    settings
}

/// The pipeline flags that point `run` at `settings`' topics.
pub fn topic_args(settings: &KafkaSettings, group: &str) -> Vec<String> {
    let t = &settings.topics;
    [
        "--brokers",
        &settings.brokers,
        "--topic",
        &t.raw,
        "--features-topic",
        &t.features,
        "--predictions-topic",
        &t.predictions,
        "--dlq-topic",
        &t.dlq,
        "--checkpoint-topic",
        &t.checkpoints,
        "--state-topic",
        &t.state,
        "--group",
        group,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Sends records `(key, partition, payload)` in order and waits for every acknowledgement.
pub fn produce(brokers: &str, topic: &str, records: &[(Option<String>, i32, Vec<u8>)]) {
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        // Poison tests send messages of several MiB.
        .set("message.max.bytes", "10000000")
        .create()
        .expect("test producer");
    for (key, partition, payload) in records {
        let mut record = BaseRecord::to(topic).partition(*partition).payload(payload);
        if let Some(k) = key {
            record = record.key(k);
        }
        let mut record = record;
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((
                    rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    record = r;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => panic!("test record not sent: {e}"),
            }
        }
    }
    producer
        .flush(Duration::from_secs(30))
        .expect("all test records acknowledged");
}

/// One consumed message.
#[derive(Clone, Debug)]
pub struct Msg {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: HashMap<String, String>,
}

/// Reads a topic from the beginning without a group.
pub struct Reader {
    consumer: BaseConsumer,
    topic: String,
    pub messages: Vec<Msg>,
}

impl Reader {
    pub fn new(brokers: &str, topic: &str) -> Reader {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("reader-{topic}"))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .expect("test consumer");
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let mut tpl = TopicPartitionList::new();
        for p in metadata.topics()[0].partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .expect("partition");
        }
        consumer.assign(&tpl).expect("assign");
        Reader {
            consumer,
            topic: topic.to_owned(),
            messages: Vec::new(),
        }
    }

    fn poll_once(&mut self, timeout: Duration) {
        if let Some(Ok(m)) = self.consumer.poll(timeout) {
            let headers = m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            self.messages.push(Msg {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().unwrap_or_default().to_vec(),
                headers,
            });
        }
    }

    /// Polls until `done` holds for the messages read so far; panics at the deadline.
    pub fn until(&mut self, deadline: Duration, what: &str, done: impl Fn(&[Msg]) -> bool) {
        let end = Instant::now() + deadline;
        while !done(&self.messages) {
            assert!(
                Instant::now() < end,
                "{}: {what} not reached within {deadline:?} ({} messages read)",
                self.topic,
                self.messages.len()
            );
            self.poll_once(Duration::from_millis(100));
        }
    }

    /// Reads everything the topic holds now (up to the current high watermarks).
    pub fn read_to_end(&mut self) {
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), Duration::from_secs(10))
            .expect("metadata");
        let mut highs = HashMap::new();
        for p in metadata.topics()[0].partitions() {
            let (_, high) = self
                .consumer
                .fetch_watermarks(&self.topic, p.id(), Duration::from_secs(10))
                .expect("watermarks");
            highs.insert(p.id(), high);
        }
        // Tracked incrementally: a topic of a million messages must not be rescanned
        // after every poll.
        let seen = std::cell::RefCell::new((0usize, HashMap::<i32, i64>::new()));
        self.until(Duration::from_secs(120), "the end of the topic", |msgs| {
            let mut seen = seen.borrow_mut();
            let (done, ends) = &mut *seen;
            for m in &msgs[*done..] {
                let end = ends.entry(m.partition).or_insert(0);
                *end = (*end).max(m.offset + 1);
            }
            *done = msgs.len();
            highs
                .iter()
                .all(|(p, high)| *high == 0 || ends.get(p).is_some_and(|e| *e >= *high))
        });
    }
}

/// Features or predictions messages folded by (station_id, window_end), checking that every repeat is
/// byte-identical to the first (an idempotent upsert downstream).
pub fn fold(messages: &[Msg]) -> BTreeMap<(String, String), Vec<u8>> {
    let mut folded: BTreeMap<(String, String), Vec<u8>> = BTreeMap::new();
    for m in messages {
        let station = String::from_utf8(m.key.clone().expect("records are keyed")).expect("utf-8 key");
        let end = m.headers.get("window_end").expect("window_end header").clone();
        let value: serde_json::Value = serde_json::from_slice(&m.payload).expect("record JSON");
        assert_eq!(value["station_id"], station.as_str(), "key is the station");
        assert_eq!(value["window_end"], end.as_str(), "header is the window end");
        match folded.get(&(station.clone(), end.clone())) {
            Some(first) => assert_eq!(
                first, &m.payload,
                "a repeated window differs from the first: {station} @ {end}"
            ),
            None => {
                folded.insert((station, end), m.payload.clone());
            }
        }
    }
    folded
}

/// Sends SIGTERM (`-9`: SIGKILL) to a process.
pub fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(sig)
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {sig} {pid}");
}

/// Starts `run --source kafka` on `settings`' topics as a child process: quick idle
/// detection and frequent commits, so tests see windows close and offsets move promptly.
pub fn pipeline(settings: &KafkaSettings, group: &str, extra: &[&str]) -> Child {
    let mut args: Vec<String> = [
        "run",
        "--source",
        "kafka",
        "--idle-timeout",
        "1s",
        "--commit-interval",
        "100ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(topic_args(settings, group));
    args.extend(extra.iter().map(|s| s.to_string()));
    spawn(&args)
}

/// Creates one more topic with topic-level settings (e.g. a larger `max.message.bytes`).
pub fn create_topic(brokers: &str, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    let results = futures::executor::block_on(admin.create_topics([&topic], &options)).expect("create topic");
    for r in results {
        r.expect("topic created");
    }
}
