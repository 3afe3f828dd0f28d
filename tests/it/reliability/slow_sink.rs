//! Scenario 6: a slow output side. The same input (40 stations, many times the 30 minutes
//! of event time a source may read ahead of the acknowledged output) is run twice: once
//! as is, once with the output producer throttled (a 100-message local queue, 50 ms
//! linger, about 2 000 records/s). The throttled run must read its input more slowly
//! (backpressure reaches the source), keep its peak memory near the free run's, drop
//! nothing, and catch up to the same output.
//!
//! Both runs are sampled as they go: the readings read so far against the output the
//! broker holds. At no sample may the source be further ahead of the durable output than
//! `--max-ahead` allows. A source that checked pacing once per activation (bug 4 of
//! RELIABILITY.md) would break this by hours: one activation may read 50 000 messages,
//! the whole short input. One body, two sizes: 3 h of input in CI, 12 h in the long run.

use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::broker::{Reader, brokers, fresh_topics};
use crate::common::free_port;
use crate::http;

use super::{Check, DEADLINE, Golden, Report, Size, pipeline, producer, sample, stop_all};

/// `--max-ahead` of both runs: the default, named so that the bound below reads against it.
const MAX_AHEAD: Duration = Duration::from_secs(30 * 60);

/// How far past `--max-ahead` a sample may find the source: the output gives the durable
/// frontier to the minute, and a partition reads one message (its stations' next 10 s)
/// past the limit before it stops. Correct pacing measures 30.0 min; pacing checked once
/// per activation, hours.
const SLACK: Duration = Duration::from_secs(2 * 60);

/// The throttle: librdkafka's local queue takes 100 records, each batch lingers 50 ms.
const THROTTLE: [&str; 4] = [
    "--kafka-option",
    "queue.buffering.max.messages=100",
    "--kafka-option",
    "linger.ms=50",
];

/// Partitions of every topic.
const PARTITIONS: i32 = 4;

/// Time between two samples of a run.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// The input on an event-time axis, to turn the counts a sample takes into times.
struct Timeline {
    /// Every reading's event time, sorted: `n` readings reach `readings[n - 1]`.
    readings: Vec<u64>,
    /// Every golden window's end, sorted: `n` windows reach `windows[n - 1]`.
    windows: Vec<u64>,
}

impl Timeline {
    fn of(golden: &Golden) -> Timeline {
        let text = std::fs::read_to_string(&golden.raw).expect("raw input");
        let mut readings: Vec<u64> = text
            .lines()
            .map(|l| {
                weatherflow::schema::parse_json(l.as_bytes(), 0)
                    .expect("generated readings are valid")
                    .timestamp_ms
            })
            .collect();
        readings.sort_unstable();
        let mut windows: Vec<u64> = golden
            .windows
            .keys()
            .map(|(_, end)| weatherflow::schema::parse_rfc3339(end).expect("window end"))
            .collect();
        windows.sort_unstable();
        Timeline { readings, windows }
    }

    /// How far (ms of event time) `read` readings reach past the end of the first `out`
    /// windows, or before any window past the first reading (where a partition's pacing
    /// starts from). The sink sends windows in time order, so the first `out` windows are
    /// the durable output to within a minute.
    fn ahead_ms(&self, read: usize, out: usize) -> i64 {
        let reached = self.readings[read.clamp(1, self.readings.len()) - 1];
        let durable = match out {
            0 => self.readings[0],
            n => self.windows[n.min(self.windows.len()) - 1],
        };
        reached as i64 - durable as i64
    }
}

/// Counts the records the broker holds in a topic: the sum of its partitions' high
/// watermarks, asked for without consuming, so that a sample takes milliseconds. (Reading
/// the topic to its end takes a second or more, in which a throttled run's durable output
/// moves on by 20 minutes of event time.)
struct Acked {
    consumer: BaseConsumer,
    topic: String,
}

impl Acked {
    fn new(brokers: &str, topic: &str) -> Acked {
        let consumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()
            .expect("watermark client");
        Acked {
            consumer,
            topic: topic.to_owned(),
        }
    }

    fn count(&self) -> usize {
        (0..PARTITIONS)
            .map(|p| {
                let (_, high) = self
                    .consumer
                    .fetch_watermarks(&self.topic, p, Duration::from_secs(10))
                    .expect("high watermark");
                high as usize
            })
            .sum()
    }
}

/// One look at a running pipeline.
struct Sample {
    /// Since the pipeline started.
    at: Duration,
    /// Readings the source had read.
    read: usize,
    /// How far (ms of event time) those readings reach past the durable output
    /// ([`Timeline::ahead_ms`]).
    ahead_ms: i64,
}

struct Outcome {
    took: Duration,
    peak_kib: u64,
    check: Check,
    samples: Vec<Sample>,
}

impl Outcome {
    /// The sample that found the source furthest ahead.
    fn furthest_ahead(&self) -> &Sample {
        self.samples
            .iter()
            .max_by_key(|s| s.ahead_ms)
            .expect("every run is sampled")
    }
}

/// Produces the input to fresh topics, then runs the pipeline (with `extra` flags) until
/// every window is out, sampling it every [`SAMPLE_EVERY`].
fn run_once(dir: &Path, golden: &Golden, timeline: &Timeline, brokers: &str, name: &str, extra: &[&str]) -> Outcome {
    let settings = fresh_topics(brokers, name, PARTITIONS);
    let (fed, _) = producer(dir, &settings, &golden.raw, 0).wait(DEADLINE);
    assert!(fed, "input produced");
    let port = free_port();
    let api = format!("127.0.0.1:{port}");
    let mut args = vec!["-w", "2", "--api", &api];
    args.extend_from_slice(extra);
    let started = Instant::now();
    let run = pipeline(dir, name, &settings, name, &args);
    http::until(port, "/ready", DEADLINE, |a| a.status == 200);
    let acked = Acked::new(brokers, &settings.topics.features);
    let mut samples = Vec::new();
    loop {
        // The readings first, the output after: the output can only have moved on in
        // between, so a sample never overstates how far ahead the source is.
        let metrics = http::get(port, "/metrics").text();
        let read = sample(&metrics, r#"weatherflow_records_in_total{source="kafka"}"#).unwrap_or(0) as usize;
        let out = acked.count();
        samples.push(Sample {
            at: started.elapsed(),
            read,
            ahead_ms: timeline.ahead_ms(read, out),
        });
        if out >= golden.windows.len() {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{name}: not every window within {DEADLINE:?}"
        );
        // The samples are the scenario: the loop watches the run, at this pace, to its end.
        std::thread::sleep(SAMPLE_EVERY);
    }
    let took = started.elapsed();
    let peak_kib = peak_rss_kib(run.id());
    stop_all(vec![run]);
    let mut features = Reader::new(brokers, &settings.topics.features);
    features.read_to_end();
    let check = Check::of(&features.messages, &golden.windows);
    Outcome {
        took,
        peak_kib,
        check,
        samples,
    }
}

#[test]
#[cfg_attr(
    no_test_broker,
    ignore = "needs a Kafka broker: WEATHERFLOW_TEST_BROKERS=$(scripts/test-broker.sh up)"
)]
fn reliability_slow_sink_3h_backpressures_the_source_and_catches_up() {
    let Some(brokers) = brokers() else { return };
    slow_sink(Size::Short, &brokers);
}

#[test]
#[ignore = "long: a throttled run of about a minute; run by scripts/reliability.sh"]
fn reliability_slow_sink_backpressures_the_source_and_catches_up() {
    let Some(brokers) = brokers() else { return };
    slow_sink(Size::Long, &brokers);
}

fn slow_sink(size: Size, brokers: &str) {
    let duration = match size {
        Size::Short => "3h",
        Size::Long => "12h",
    };
    let dir = super::workdir();
    let golden = Golden::generate(dir.path(), 40, duration, &[]);
    let timeline = Timeline::of(&golden);
    let free = run_once(dir.path(), &golden, &timeline, brokers, "sink-free", &[]);
    free.check.assert_clean("unthrottled run");
    let slow = run_once(dir.path(), &golden, &timeline, brokers, "sink-slow", &THROTTLE);
    // What the throttled run had read when the free run was done.
    let read_when_free_done = slow
        .samples
        .iter()
        .take_while(|s| s.at <= free.took)
        .last()
        .map_or(0, |s| s.read);
    let minutes = |ms: i64| ms as f64 / 60_000.0;

    let mut report = Report::new(&format!(
        "6. slow sink (100-message producer queue), {duration} of input"
    ));
    report.long = size == Size::Long;
    report.runs = 2;
    report.faults = 1;
    report.records_in = golden.lines;
    let extra = [
        ("free_s", free.took.as_secs_f64().into()),
        ("throttled_s", slow.took.as_secs_f64().into()),
        ("free_peak_rss_mib", (free.peak_kib / 1024).into()),
        ("throttled_peak_rss_mib", (slow.peak_kib / 1024).into()),
        ("read_at_free_finish", read_when_free_done.into()),
        ("throttled_samples", slow.samples.len().into()),
        (
            "throttled_max_read_ahead_min",
            minutes(slow.furthest_ahead().ahead_ms).into(),
        ),
        (
            "free_max_read_ahead_min",
            minutes(free.furthest_ahead().ahead_ms).into(),
        ),
    ];
    report
        .extra
        .extend(extra.map(|(k, v): (&str, serde_json::Value)| (k.to_owned(), v)));
    report = report.with(&slow.check);
    report.emit();
    slow.check.assert_clean("throttled run");
    let limit = (MAX_AHEAD + SLACK).as_millis() as i64;
    for (run, outcome) in [("throttled", &slow), ("free", &free)] {
        let worst = outcome.furthest_ahead();
        assert!(
            worst.ahead_ms <= limit,
            "{run} run: {:.1} s in, the source had read {} readings, {:.1} min of event time past the \
             durable output (--max-ahead {:.0} min)",
            worst.at.as_secs_f64(),
            worst.read,
            minutes(worst.ahead_ms),
            minutes(MAX_AHEAD.as_millis() as i64)
        );
    }
    assert!(
        slow.took > free.took * 2,
        "the throttle bit: {:?} against {:?}",
        slow.took,
        free.took
    );
    assert!(
        read_when_free_done < golden.lines,
        "backpressure reached the source: {read_when_free_done} of {} read when the free run was done",
        golden.lines
    );
    assert!(
        slow.peak_kib <= free.peak_kib + 64 * 1024,
        "memory stayed bounded: {} MiB throttled against {} MiB free",
        slow.peak_kib / 1024,
        free.peak_kib / 1024
    );
}
