//! Scenario 5: event time as real feeds deliver it. Duplicates, readings out of order
//! within the lateness, readings later than it (counted and dropped), one partition that
//! falls idle while the others keep flowing, and stations that stop reporting.
//!
//! The input is the oracle's: seven stations with all of the above over 45 minutes, on
//! partitions 0–2, arriving at a steady pace; partition 3 carries one station for the
//! first five minutes and then nothing. If the idle partition held the watermark back,
//! no window after its last reading could close while the others still flow; the test
//! requires such windows to appear before the producer is done.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use weatherflow::schema::{WindowFeatures, format_rfc3339};

use crate::broker::{Reader, brokers, fresh_topics};
use crate::common::free_port;
use crate::http;
use crate::oracle::{self, BASE, MINUTE, Obs};

use super::{Check, DEADLINE, Progress, Report, await_windows, long, pipeline, sample, stop_all};

#[test]
#[cfg_attr(
    no_test_broker,
    ignore = "needs a Kafka broker: WEATHERFLOW_TEST_BROKERS=$(scripts/test-broker.sh up)"
)]
fn reliability_time_duplicates_lateness_idle_partition_and_silent_stations() {
    let Some(brokers) = brokers() else { return };
    let dir = super::workdir();
    let seeds: Vec<u64> = if long() { (1..=10).collect() } else { vec![0x71e] };
    let mut report = Report::new("5. time: duplicates, lateness, idle partition, silent station");
    let mut all = Check::default();
    for seed in seeds {
        let mut lines = oracle::generate(seed);
        lines.retain(|(_, o)| o.is_some());
        let stations: Vec<String> = lines
            .iter()
            .filter_map(|(_, o)| o.as_ref().map(|o| o.station.clone()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let partition_of = |o: &Obs| {
            if o.station == "idle" {
                3
            } else {
                stations.iter().position(|s| *s == o.station).unwrap_or(0) % 3
            }
        };
        // The station on partition 3 reports every 10 s for five minutes, then never again.
        let idle: Vec<(String, Option<Obs>)> = (0..30)
            .map(|i| {
                let o = Obs {
                    station: "idle".into(),
                    t: BASE + 5_000 + i * 10_000,
                    values: [Some(1.0 + i as f64 / 10.0), None, Some(1000.0), None],
                };
                let line = format!(
                    r#"{{"station_id":"idle","timestamp":"{}","temperature":{:.2},"pressure":1000.0}}"#,
                    format_rfc3339(o.t),
                    o.values[0].unwrap_or_default()
                );
                (line, Some(o))
            })
            .collect();
        let mut input = idle.clone();
        input.extend(lines.iter().cloned());
        let want = oracle::oracle_partitioned(&input, partition_of);
        let golden: BTreeMap<(String, String), Vec<u8>> = want
            .windows
            .iter()
            .map(|((s, end), w)| ((s.clone(), format_rfc3339(*end)), serde_json::to_vec(w).expect("json")))
            .collect();

        let settings = fresh_topics(&brokers, "time", 4);
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("enable.idempotence", "true")
            .set("linger.ms", "1")
            .create()
            .expect("producer");
        for (line, o) in &idle {
            let o = o.as_ref().expect("valid");
            producer
                .send(
                    BaseRecord::to(&settings.topics.raw)
                        .partition(3)
                        .key(&o.station)
                        .payload(line),
                )
                .map_err(|(e, _)| e)
                .expect("send");
        }
        producer.flush(Duration::from_secs(30)).expect("flushed");

        // The other partitions flow at a steady pace (about 20 s in all), never quiet long
        // enough to count as idle themselves.
        let done = Arc::new(AtomicBool::new(false));
        let feeder = {
            let (topic, done) = (settings.topics.raw.clone(), done.clone());
            let records: Vec<(i32, String, String)> = lines
                .iter()
                .map(|(l, o)| {
                    let o = o.as_ref().expect("valid");
                    (partition_of(o) as i32, o.station.clone(), l.clone())
                })
                .collect();
            std::thread::spawn(move || {
                let pace = Duration::from_secs(20).div_f64(records.len() as f64);
                let started = Instant::now();
                for (i, (p, key, line)) in records.iter().enumerate() {
                    // A load generator keeps a rate; it does not wait for anything.
                    if let Some(ahead) = (pace * i as u32).checked_sub(started.elapsed()) {
                        std::thread::sleep(ahead);
                    }
                    producer
                        .send(BaseRecord::to(&topic).partition(*p).key(key).payload(line))
                        .map_err(|(e, _)| e)
                        .expect("send");
                }
                producer.flush(Duration::from_secs(30)).expect("flushed");
                done.store(true, Ordering::SeqCst);
            })
        };
        // Started after the feeder: a pipeline that finds every partition quiet for the
        // idle timeout lets the watermark follow the wall clock, and yesterday's readings
        // would all be late.
        let port = free_port();
        let api = format!("127.0.0.1:{port}");
        let run = pipeline(
            dir.path(),
            &format!("time-{seed}"),
            &settings,
            "time",
            &["-w", "2", "--api", &api],
        );
        let mut features = Reader::new(&brokers, &settings.topics.features);
        // A window of a flowing partition ending well after the idle station's last
        // reading, seen while the producer still writes.
        let after_idle = BASE + 15 * MINUTE;
        features.until(DEADLINE, "a window past the idle partition's last reading", |m| {
            m.iter()
                .any(|m| serde_json::from_slice::<WindowFeatures>(&m.payload).is_ok_and(|w| w.window_end >= after_idle))
        });
        let closed_while_flowing = !done.load(Ordering::SeqCst);
        feeder.join().expect("feeder");
        let progress = Progress::default();
        await_windows(&mut features, &progress, golden.len(), "every window");
        let metrics = http::get(port, "/metrics").text();
        stop_all(vec![run]);
        features.read_to_end();
        assert!(
            closed_while_flowing,
            "windows closed while partition 3 was idle and the others flowed"
        );
        assert_eq!(
            sample(&metrics, "weatherflow_records_late_total"),
            Some(want.late),
            "late readings counted"
        );
        assert_eq!(
            sample(&metrics, "weatherflow_records_duplicate_total"),
            Some(want.duplicates),
            "duplicates counted"
        );
        // The oracle's floating-point summation order may differ in the last bit from
        // the pipeline's; compare values with a tolerance, the window set exactly.
        let got: BTreeMap<(String, u64), WindowFeatures> = crate::broker::fold(&features.messages)
            .values()
            .map(|p| {
                let w: WindowFeatures = serde_json::from_slice(p).expect("features");
                ((w.station_id.clone(), w.window_end), w)
            })
            .collect();
        oracle::assert_windows(&format!("time seed {seed}"), &got, &want);
        let check = Check::of(&features.messages, &golden);
        report.runs += 1;
        report.faults += (want.late + want.duplicates) as usize + 1;
        report.records_in += input.len();
        report.windows_out += check.distinct;
        report.extra.insert(format!("late_{seed}"), want.late.into());
        report
            .extra
            .insert(format!("duplicates_{seed}"), want.duplicates.into());
        all.missing.extend(check.missing);
        all.unexpected.extend(check.unexpected);
        all.nonidentical.extend(check.nonidentical);
    }
    report.missing = all.missing.len();
    report.unexpected = all.unexpected.len();
    report.nonidentical_duplicates = all.nonidentical.len();
    report.emit();
}
