//! Window emission: turns the continuously maintained window arrangement into exactly one
//! weather-features record per non-empty (station, window end), with its trend.
//!
//! Differential reports only *changes*: when a station's window at `E + 1 min` holds the
//! same panes as at `E` (no pane entered or left), nothing is emitted for `E + 1 min`, yet
//! the contract wants that window too. So this operator keeps the accumulated value of
//! each station's window (an upsert view of the arrangement), and when the frontier passes
//! a window end `E` it applies every update at times `≤ E` and emits every station whose
//! window is live at `E`. Updates are bucketed by *their own* time, not the message
//! capability (docs/design.md §4.6), and the operator holds a capability at its input frontier so
//! it can emit for minutes in which no update arrived.
//!
//! # The trend
//! `trend.<var>_change_1m` is this window's mean minus the mean of the same station's
//! window ending one minute earlier. The view already walks every window end in order and
//! emits every live station at each, so a station's previous window exists exactly when
//! it was emitted at `E − 1 min`: keeping its exact means from that emission gives the
//! trend with no further dataflow. An earlier design joined the window arrangement with
//! itself delayed by a minute; that join, its delay and its second arrangement were 26 %
//! of a replay's CPU (BENCHMARKS.md) for the same numbers, since every station's window
//! changes every minute and so both sides of the join did too.
//!
//! Transient `−old/+new` pairs cancel in the accumulation, so no `consolidate` is needed
//! in front of it.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::{Stream, StreamVec};
use timely::progress::frontier::MutableAntichain;

use super::pane::{StationKey, StationNames};
use super::window::{Means, TrendDelta, WindowStats};
use crate::metrics::Metrics;
use crate::schema::{MINUTE_MS, Trend, Var, WindowFeatures};

type Updates<D> = Vec<((StationKey, D), u64, isize)>;

/// A tiny multiset: the accumulated updates of one value per station. Between a `−old`
/// and a `+new` at the same time it briefly holds two entries.
#[derive(Debug)]
struct Accum<V>(Vec<(V, isize)>);

impl<V: PartialEq> Accum<V> {
    fn update(&mut self, value: V, diff: isize) {
        match self.0.iter_mut().position(|(v, _)| *v == value) {
            Some(i) => {
                self.0[i].1 += diff;
                if self.0[i].1 == 0 {
                    self.0.swap_remove(i);
                }
            }
            None => self.0.push((value, diff)),
        }
    }
    fn current(&self) -> Option<&V> {
        self.0.iter().find(|(_, d)| *d > 0).map(|(v, _)| v)
    }
}

impl<V> Default for Accum<V> {
    fn default() -> Self {
        Accum(Vec::new())
    }
}

#[derive(Debug, Default)]
struct Station {
    window: Accum<WindowStats>,
    /// The end and exact means of the last window emitted for this station.
    emitted: Option<(u64, Means)>,
}

/// Window updates waiting for their time to close.
type Pending = Vec<(StationKey, WindowStats, isize)>;

fn lower(frontier: &MutableAntichain<u64>) -> Option<u64> {
    frontier.frontier().iter().min().copied()
}

/// Emits one [`WindowFeatures`] per live station and closed window end, at time `E`.
pub fn emit_windows<'s>(
    windows: Stream<'s, u64, Updates<WindowStats>>,
    names: StationNames,
    metrics: Arc<Metrics>,
) -> StreamVec<'s, u64, WindowFeatures> {
    windows.unary_frontier(Pipeline, "EmitWindows", move |cap, _info| {
        let mut cap = Some(cap);
        let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
        let mut live: FxHashMap<u64, Station> = FxHashMap::default();
        let mut next_end: u64 = 0;
        move |(input, input_frontier), output| {
            input.for_each(|_cap, data| {
                for ((station, agg), time, diff) in data.drain(..) {
                    pending.entry(time).or_default().push((station, agg, diff));
                }
            });
            let Some(held) = cap.as_mut() else { return };
            let frontier = lower(input_frontier);
            let mut emitted = 0u64;
            loop {
                // With live windows every minute needs a record; otherwise skip ahead to
                // the next time anything changes.
                let end = if live.is_empty() {
                    match pending.keys().next() {
                        Some(&t) => t.max(next_end),
                        None => break,
                    }
                } else {
                    next_end
                };
                if frontier.is_some_and(|f| end >= f) {
                    break;
                }
                while let Some(entry) = pending.first_entry() {
                    if *entry.key() > end {
                        break;
                    }
                    for (s, agg, d) in entry.remove() {
                        live.entry(s.0).or_default().window.update(agg, d);
                    }
                }
                // A station without a window at `end` leaves; if it comes back, its first
                // window has no previous one, so no trend.
                live.retain(|_, st| !st.window.0.is_empty());
                metrics.record_emit(end);
                let at = held.delayed(&end);
                let mut session = output.session(&at);
                for (station, st) in live.iter_mut() {
                    if let Some(agg) = st.window.current() {
                        let means = agg.means();
                        let trend = match &st.emitted {
                            Some((prev_end, prev)) if prev_end + MINUTE_MS == end => {
                                Some(TrendDelta::between(&means, prev))
                            }
                            _ => None,
                        };
                        session.give(features(&names, StationKey(*station), end, agg, trend.as_ref()));
                        st.emitted = Some((end, means));
                        emitted += 1;
                    }
                }
                next_end = end + MINUTE_MS;
            }
            match frontier {
                Some(f) => held.downgrade(&f.max(*held.time())),
                None => cap = None,
            }
            if emitted > 0 {
                metrics.add_windows(emitted);
            }
        }
    })
}

fn features(
    names: &StationNames,
    key: StationKey,
    end: u64,
    agg: &WindowStats,
    trend: Option<&TrendDelta>,
) -> WindowFeatures {
    let stats = |var: Var| agg.vars[var as usize].stats();
    let change = |var: Var| trend.and_then(|t| t.value(var));
    // The pane builder on this worker registered every key before its first pane.
    let station_id = names
        .borrow()
        .get(key.0)
        .map_or_else(|| format!("{:016x}", key.0), |s| s.to_string());
    WindowFeatures {
        station_id,
        window_start: end - super::pane::WINDOW_MINUTES * MINUTE_MS,
        window_end: end,
        count: u64::from(agg.count),
        temperature: stats(Var::Temperature),
        humidity: stats(Var::Humidity),
        pressure: stats(Var::Pressure),
        wind_speed: stats(Var::WindSpeed),
        trend: Trend {
            temperature_change_1m: change(Var::Temperature),
            humidity_change_1m: change(Var::Humidity),
            pressure_change_1m: change(Var::Pressure),
            wind_speed_change_1m: change(Var::WindSpeed),
        },
    }
}
