//! Graph assembly: readings in, one weather-features record per closed window out.
//!
//! ```text
//! readings ─exchange(station)─► Panes ─(+1 @ m+1, −1 @ m+6)─► reduce by station ─► EmitWindows ─► WindowFeatures
//!  (time = event minute)         dedup, exact moments          (arranged, ≤5 panes/key)   (upsert view, trend)
//! ```
//!
//! # Why this design
//! Three ways were measured (docs/design.md §4.10) to keep sliding windows in differential. Feeding
//! every reading into differential costs two updates per reading and cannot retract a
//! min/max; copying each pane into its five windows (`(station, window_end)` keys) costs
//! ten updates per pane. Pre-aggregating per-minute panes and letting each pane live in the
//! collection for exactly the five minutes it is part of a window (a temporal filter) costs
//! two updates per pane, and `reduce` sees at most five values per key. It was the fastest
//! correct design, and it is the one used here.
//!
//! The trend (this window's mean minus the previous minute's) is taken by the emitter,
//! which walks every window end in order anyway: see [`emit`] for why this replaced a
//! self-join of the window arrangement delayed by a minute. Every arrangement is compacted by differential as the frontier advances; the only
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
pub mod tenancy;
pub mod window;

#[cfg(test)]
mod tests;

use std::rc::Rc;
use std::sync::Arc;

use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use timely::dataflow::StreamVec;

use crate::metrics::Metrics;
use crate::schema::{Reading, WindowFeatures};
use pane::{Refused, Roster, StationKey, StationNames};
use window::WindowStats;

/// The windows, arranged by station: what [`window_stats`] builds.
pub type WindowArrangement<'s> = Arranged<'s, TraceAgent<ValSpine<StationKey, WindowStats, u64, isize>>>;

/// The window pipeline's two outputs.
pub struct Windows<'s> {
    /// One record per closed window.
    pub features: StreamVec<'s, u64, WindowFeatures>,
    /// Readings refused by the pane builder (a station key collision, the station limit):
    /// for the dead-letter topic, already counted as invalid.
    pub refused: StreamVec<'s, u64, Refused>,
}

/// Bounds on the stations one worker holds (docs/design.md §4.11).
#[derive(Clone, Copy, Debug)]
pub struct StationLimits {
    /// Stations per worker: `--max-stations` divided among all workers, plus four times
    /// the square root of that share when there are several, for the uneven spread of
    /// stations over workers by hash (one worker holds exactly the cap).
    pub per_worker: usize,
    /// `--station-ttl`, ms of event time.
    pub ttl_ms: u64,
}

impl StationLimits {
    /// `max_stations` over `workers` workers in all.
    pub fn new(max_stations: usize, workers: usize, ttl_ms: u64) -> StationLimits {
        StationLimits {
            per_worker: {
                let share = max_stations.div_ceil(workers.max(1));
                // A worker's count of n stations hashed over w workers has a standard
                // deviation below √(n/w): four of them are never reached in practice.
                let slack = if workers > 1 {
                    (4.0 * (share as f64).sqrt()).ceil() as usize
                } else {
                    0
                };
                share.saturating_add(slack)
            },
            ttl_ms,
        }
    }

    /// No bound (tests and benchmarks).
    pub fn unbounded() -> StationLimits {
        StationLimits {
            per_worker: usize::MAX,
            ttl_ms: u64::MAX,
        }
    }
}

/// Builds the window pipeline over a stream of readings timed at their event minute.
pub fn windows<'s>(readings: StreamVec<'s, u64, Reading>, metrics: Arc<Metrics>, limits: StationLimits) -> Windows<'s> {
    let names: StationNames = Rc::new(std::cell::RefCell::new(Roster::new(limits.per_worker, limits.ttl_ms)));
    let (panes, refused) = pane::build_panes(readings, names.clone(), metrics.clone());
    let arranged = window_stats(panes);
    let features = emit::emit_windows(
        arranged.as_collection(|station, stats| (*station, *stats)).inner,
        names,
        metrics,
    );
    Windows { features, refused }
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
