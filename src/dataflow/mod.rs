//! Graph assembly: readings in, one weather-features record per closed window out.
//!
//! ```text
//! readings ─exchange(station)─► Panes ─(+1 @ m+1, −1 @ m+6)─► reduce by station ─► windows ─┐
//!  (time = event minute)         dedup, exact moments          (arranged, ≤5 panes/key)    │
//!                                                                 │                        ▼
//!                                                  delay(+1 min) ─► arrange ─► join ─► EmitWindows ─► WindowFeatures
//! ```
//!
//! # Why this design
//! The notes (§3.3) measured three ways to keep sliding windows in differential. Feeding
//! every reading into differential costs two updates per reading and cannot retract a
//! min/max; copying each pane into its five windows (`(station, window_end)` keys) costs
//! ten updates per pane. Pre-aggregating per-minute panes and letting each pane live in the
//! collection for exactly the five minutes it is part of a window (a temporal filter) costs
//! two updates per pane, and `reduce` sees at most five values per key. It was the fastest
//! correct design, and it is the one used here.
//!
//! The trend is an arrangement join: the reduce's output arrangement (window ending at
//! `E`) joined with the same collection delayed by one minute (window ending at `E − 1`).
//! Every arrangement is compacted by differential as the frontier advances; the only
//! state outside differential is one open minute of samples per station in [`pane`] and
//! the current window per station in [`emit`], so memory follows the live stations, not
//! the length of the stream.
//!
//! # Contract
//! Readings must arrive at the timely time `floor_minute(timestamp_ms)` and never below
//! the source's capability; a source drops what would violate that as late. Given that,
//! the output depends only on the multiset of readings (and, for duplicates with different
//! values, on their `seq`), never on the number of workers or processes.

pub mod emit;
pub mod pane;
pub mod predict;
pub mod window;

use std::rc::Rc;
use std::sync::Arc;

use differential_dataflow::VecCollection;
use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use timely::dataflow::StreamVec;

use crate::metrics::Metrics;
use crate::schema::{MINUTE_MS, Reading, WindowFeatures};
use pane::{StationKey, StationNames};
use window::{TrendDelta, WindowStats};

/// The windows, arranged by station: what [`window_stats`] builds and [`trends`] joins.
pub type WindowArrangement<'s> = Arranged<'s, TraceAgent<ValSpine<StationKey, WindowStats, u64, isize>>>;

/// Builds the window pipeline over a stream of readings timed at their event minute.
/// `on_fatal` is called when the run cannot continue correctly (a station key collision).
pub fn windows<'s>(
    readings: StreamVec<'s, u64, Reading>,
    metrics: Arc<Metrics>,
    on_fatal: impl Fn(String) + 'static,
) -> StreamVec<'s, u64, WindowFeatures> {
    let names: StationNames = Rc::default();
    let panes = pane::build_panes(readings, names.clone(), on_fatal, metrics.clone());
    let arranged = window_stats(panes);
    let windows = arranged.clone().as_collection(|station, stats| (*station, *stats));
    let trends = trends(arranged);
    emit::emit_windows(windows.inner, trends.inner, names, metrics)
}

/// The window reduce: each station's live panes (at most five) folded into its window.
/// Public so the micro-benchmarks can measure it apart from the rest of the graph.
pub fn window_stats<'s>(panes: pane::PaneCollection<'s>) -> WindowArrangement<'s> {
    panes
        .arrange_by_key_named("Arrange: Panes")
        .reduce_abelian::<_, ValBuilder<_, _, _, _>, ValSpine<StationKey, WindowStats, u64, isize>, _, _>(
            "Windows",
            |_station, live_panes, output| output.push((WindowStats::from_panes(live_panes), 1)),
            |batch, station, updates| {
                batch.clear();
                batch.extend(updates.drain(..).map(|(stats, t, r)| ((*station, stats), t, r)));
            },
        )
}

/// The trend join: each window with the same station's window one minute earlier.
/// Only the means cross the join: the previous window's other statistics are not needed.
pub fn trends<'s>(arranged: WindowArrangement<'s>) -> VecCollection<'s, u64, (StationKey, TrendDelta), isize> {
    let previous = arranged
        .clone()
        .as_collection(|station, stats| (*station, stats.means()))
        .delay(|t| t + MINUTE_MS)
        .arrange_by_key();
    arranged.join_core(previous, |station, now, prev| {
        Some((*station, TrendDelta::between(&now.means(), prev)))
    })
}
