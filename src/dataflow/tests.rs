//! Operator tests: each drives a small dataflow directly, with an input handle and a
//! probe, so that a failure points at the operator rather than at the whole CLI.
//!
//! Time moves only when a test advances its input; the worker steps until the probe has
//! passed that time. Nothing sleeps.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use timely::dataflow::operators::{Inspect, Probe};
use timely::dataflow::{InputHandleVec, ProbeHandle};

use super::pane::{Pane, Refusal, Refused, Roster, StationKey, build_panes};
use super::windows;
use crate::metrics::Metrics;
use crate::schema::{InvalidReason, MINUTE_MS, MISSING, Reading, StationId, WindowFeatures};

/// 2026-11-20T12:00:00Z.
const T0: u64 = 1_763_640_000_000;

fn reading(station: &str, ms: u64, temperature: f64, seq: u64) -> Reading {
    Reading {
        station: StationId::from(station),
        timestamp_ms: ms,
        seq,
        values: [(temperature * 1000.0).round() as i32, MISSING, MISSING, MISSING],
    }
}

/// Feeds timestamp-ordered `input`, advancing the input to each reading's event minute,
/// then to `until`, stepping until the probe has passed it.
fn feed(
    worker: &mut timely::worker::Worker,
    handle: &mut InputHandleVec<u64, Reading>,
    probe: &ProbeHandle<u64>,
    input: Vec<Reading>,
    until: u64,
) {
    for r in input {
        let minute = crate::schema::floor_minute(r.timestamp_ms);
        if minute > *handle.time() {
            handle.advance_to(minute);
        }
        handle.send(r);
    }
    handle.advance_to(until);
    while probe.less_than(&until) {
        worker.step();
    }
}

type PaneUpdates = Vec<((StationKey, (u64, Pane)), u64, isize)>;

/// The pane builder's updates and refusals for `input`, with the input advanced to `until`.
fn panes(input: Vec<Reading>, until: u64) -> (PaneUpdates, Vec<Refused>, Arc<Metrics>) {
    panes_with(input, until, Roster::default())
}

/// [`panes`] with a roster of the test's choosing (a cap, a TTL).
fn panes_with(input: Vec<Reading>, until: u64, roster: Roster) -> (PaneUpdates, Vec<Refused>, Arc<Metrics>) {
    timely::execute_directly(move |worker| {
        let mut handle = InputHandleVec::<u64, Reading>::new();
        let probe = ProbeHandle::new();
        let metrics = Arc::new(Metrics::new(1));
        let updates: Rc<RefCell<PaneUpdates>> = Rc::default();
        let rejected: Rc<RefCell<Vec<Refused>>> = Rc::default();
        let (u, r) = (updates.clone(), rejected.clone());
        let m = metrics.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            let (panes, collisions) = build_panes(handle.to_stream(scope), Rc::new(RefCell::new(roster)), m);
            panes.inner.inspect(move |x| u.borrow_mut().push(*x)).probe_with(&probe);
            collisions
                .inspect(move |c| r.borrow_mut().push(c.clone()))
                .probe_with(&probe);
        });
        feed(worker, &mut handle, &probe, input, until);
        (updates.take(), rejected.take(), metrics)
    })
}

#[test]
fn beyond_the_cap_new_stations_are_refused_counted_and_idle_newcomers_make_way() {
    // Room for two: a station reporting every minute, and a one-off id. A third id a minute
    // later is refused (the one-off id is not idle yet); ten minutes after the one-off
    // reading, a newcomer takes its place.
    let mut input = Vec::new();
    for m in 0..15 {
        input.push(reading("real", T0 + m * MINUTE_MS + 1_000, 10.0, m));
    }
    input.push(reading("one-off", T0 + 2_000, 20.0, 100));
    input.push(reading("refused", T0 + MINUTE_MS + 3_000, 30.0, 101));
    input.push(reading("refused", T0 + 2 * MINUTE_MS + 3_000, 30.0, 102));
    input.push(reading("later", T0 + 12 * MINUTE_MS + 3_000, 40.0, 103));
    let (updates, refused, metrics) = panes_with(input, T0 + 16 * MINUTE_MS, Roster::new(2, 26 * 60 * MINUTE_MS));
    assert_eq!(refused.len(), 2, "both readings of the third id");
    assert!(
        refused
            .iter()
            .all(|r| r.refusal == Refusal::StationLimit && r.reading.station.as_str() == "refused")
    );
    let stations: std::collections::BTreeSet<u64> = updates.iter().map(|((k, _), _, _)| k.0).collect();
    let expected: std::collections::BTreeSet<u64> = ["real", "one-off", "later"]
        .iter()
        .map(|s| StationKey::of(s).0)
        .collect();
    assert_eq!(stations, expected, "the later station took the idle one-off's place");
    let snapshot = metrics.snapshot();
    assert!(snapshot.invalid.contains(&(InvalidReason::StationLimit, 2)));
    assert_eq!(snapshot.stations_live, 2);
}

#[test]
fn a_station_silent_for_the_ttl_is_forgotten() {
    let ttl = 20 * MINUTE_MS;
    let input = vec![
        reading("quiet", T0 + 1_000, 10.0, 1),
        reading("busy", T0 + 1_000, 10.0, 2),
        reading("busy", T0 + 30 * MINUTE_MS + 1_000, 10.0, 3),
    ];
    let (_, refused, metrics) = panes_with(input, T0 + 31 * MINUTE_MS, Roster::new(10, ttl));
    assert!(refused.is_empty());
    assert_eq!(metrics.snapshot().stations_live, 1, "only the busy station is held");
}

#[test]
fn a_pane_enters_one_minute_after_its_minute_and_leaves_five_later_deduplicated() {
    let input = vec![
        reading("berlin", T0 + 1_000, 10.0, 1),
        reading("berlin", T0 + 1_000, 99.0, 2), // same timestamp: the first copy wins
        reading("berlin", T0 + 31_000, 12.0, 3),
    ];
    let (updates, collisions, metrics) = panes(input, T0 + 2 * MINUTE_MS);
    assert!(collisions.is_empty());
    assert_eq!(updates.len(), 2, "one +1 and one −1: {updates:?}");
    let key = StationKey::of("berlin");
    let ((k, (minute, pane)), enter, diff) = &updates[0];
    assert_eq!((*k, *minute, *enter, *diff), (key, T0, T0 + MINUTE_MS, 1));
    assert_eq!(pane.count, 2);
    assert_eq!(
        pane.vars[0].sum, 22_000,
        "10.0 + 12.0 in milli-units; the duplicate's 99 is gone"
    );
    let (_, leave, diff) = &updates[1];
    assert_eq!((*leave, *diff), (T0 + 6 * MINUTE_MS, -1));
    assert_eq!(metrics.snapshot().duplicate, 1);
}

#[test]
fn nothing_leaves_the_pane_builder_before_its_minute_closes() {
    // The input stays at the reading's minute: the pane must wait for the frontier.
    let (updates, _, _) = panes(vec![reading("lisbon", T0 + 5_000, 15.0, 1)], T0);
    assert!(updates.is_empty(), "{updates:?}");
}

#[test]
fn a_station_key_collision_is_rejected_and_counted_and_the_run_goes_on() {
    // Two ids whose keys are made equal by the test: the builder must never merge them,
    // keep the first id seen, and reject the other's readings with their data intact.
    let owner = "station-a";
    let intruder = "station-b";
    let input = vec![
        reading(owner, T0 + 1_000, 10.0, 1),
        reading(intruder, T0 + 2_000, 30.0, 2),
        reading(intruder, T0 + MINUTE_MS + 2_000, 31.0, 3),
        reading(owner, T0 + MINUTE_MS + 1_000, 11.0, 4),
    ];
    let (updates, collisions, metrics) =
        super::pane::with_test_keys(&[(intruder, owner)], || panes(input, T0 + 3 * MINUTE_MS));
    let key = StationKey::of(owner);
    assert!(updates.iter().all(|((k, _), _, _)| *k == key));
    let entering: Vec<u32> = updates
        .iter()
        .filter(|(_, _, d)| *d > 0)
        .map(|((_, (_, p)), _, _)| p.count)
        .collect();
    assert_eq!(entering, vec![1, 1], "only the owner's panes, one reading each");
    assert_eq!(collisions.len(), 2);
    assert!(collisions.iter().all(|c| c.refusal
        == Refusal::Collision {
            owner: owner.into(),
            key: key.0
        }));
    assert_eq!(collisions[0].reading, reading(intruder, T0 + 2_000, 30.0, 2));
    let invalid = metrics.snapshot().invalid;
    assert!(
        invalid.contains(&(InvalidReason::StationKeyCollision, 2)),
        "{invalid:?}"
    );
}

/// The windows emitted for `input` once the input has reached `until`.
fn emitted(input: Vec<Reading>, until: u64) -> Vec<WindowFeatures> {
    timely::execute_directly(move |worker| {
        let mut handle = InputHandleVec::<u64, Reading>::new();
        let probe = ProbeHandle::new();
        let out: Rc<RefCell<Vec<WindowFeatures>>> = Rc::default();
        let sink = out.clone();
        worker.dataflow::<u64, _, _>(|scope| {
            windows(
                handle.to_stream(scope),
                Arc::new(Metrics::new(1)),
                super::StationLimits::unbounded(),
            )
            .features
            .inspect(move |w| sink.borrow_mut().push(w.clone()))
            .probe_with(&probe);
        });
        feed(worker, &mut handle, &probe, input, until);
        let mut out = out.take();
        out.sort_by(|a, b| (&a.station_id, a.window_end).cmp(&(&b.station_id, b.window_end)));
        out
    })
}

#[test]
fn the_emitter_gives_every_window_once_with_exact_statistics_and_trend() {
    // One reading a minute for three minutes: 10, 12, 14 °C at :00:30, :01:30, :02:30.
    let input: Vec<Reading> = (0..3)
        .map(|i| reading("oslo", T0 + i * MINUTE_MS + 30_000, 10.0 + 2.0 * i as f64, i))
        .collect();
    // Far enough for every window that holds a reading to close.
    let out = emitted(input, T0 + 10 * MINUTE_MS);
    let ends: Vec<u64> = out.iter().map(|w| (w.window_end - T0) / MINUTE_MS).collect();
    assert_eq!(ends, vec![1, 2, 3, 4, 5, 6, 7], "each window end from :01 to :07, once");
    let w3 = &out[2];
    assert_eq!(
        (w3.window_start, w3.window_end),
        (T0 - 2 * MINUTE_MS, T0 + 3 * MINUTE_MS)
    );
    assert_eq!(w3.count, 3);
    let t = w3.temperature.as_ref().expect("temperature");
    assert_eq!((t.count, t.mean, t.min, t.max), (3, 12.0, 10.0, 14.0));
    assert_eq!(t.std, Some(2.0));
    let slope = t.slope_per_hour.expect("slope");
    assert!((slope - 120.0).abs() < 1e-9, "2 °C a minute is 120 °C an hour: {slope}");
    assert!(w3.humidity.is_none(), "no reading carried humidity");
    let change = w3.trend.temperature_change_1m.expect("trend");
    assert!(
        (change - 1.0).abs() < 1e-9,
        "mean 12 against 11 a minute before: {change}"
    );
    assert_eq!(
        out[0].trend.temperature_change_1m, None,
        "no window a minute before the first"
    );
}

#[test]
fn a_window_is_emitted_only_once_the_frontier_has_passed_its_end() {
    let input = vec![reading("oslo", T0 + 30_000, 10.0, 1)];
    // At :01 the frontier has reached the end of the first window but not passed it.
    assert!(emitted(input.clone(), T0 + MINUTE_MS).is_empty());
    let ends: Vec<u64> = emitted(input, T0 + 2 * MINUTE_MS + 1)
        .iter()
        .map(|w| w.window_end)
        .collect();
    assert_eq!(
        ends,
        vec![T0 + MINUTE_MS, T0 + 2 * MINUTE_MS],
        "every end the frontier passed"
    );
}
