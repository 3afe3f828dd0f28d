//! Sources: where readings enter the dataflow, and where event time is decided.
//!
//! Every source sends a reading at the timely time of its event minute
//! (`floor_minute(timestamp_ms)`) and holds its capability at the minute of its watermark,
//! `max event time seen − lateness` (docs/design.md §4). A reading older than the watermark is late:
//! it is counted and dropped, because the windows it belongs to may already be closed.
//! Invalid readings are counted by reason and never enter the dataflow.
//!
//! Sources also pace themselves against a probe at the end of the dataflow: a worker does
//! not run more than `--max-ahead` ([`DEFAULT_MAX_AHEAD_MS`]) of event time ahead of the slowest part of the
//! cluster ([`crate::worker::WorkerContext::may_send`]). Timely has no backpressure between operators; without this, a fast worker's
//! readings pile up downstream waiting for a slow worker's watermark (the pitfall the
//! issue describes for Flink and Bytewax).

pub mod file;
pub mod generator;
pub mod kafka;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilderSession;

use crate::schema::{Reading, floor_minute};

/// How far (event time, ms) a source may run ahead of the dataflow's output frontier,
/// unless `--max-ahead` says otherwise.
pub const DEFAULT_MAX_AHEAD_MS: u64 = 30 * 60_000;

/// Sends `batch` (drained) at the times of the readings' event minutes, one session per
/// run of equal minutes. `batch` should be ordered by time, so the runs are long.
pub fn give_by_minute(
    output: &mut OutputBuilderSession<'_, u64, CapacityContainerBuilder<Vec<Reading>>>,
    cap: &Capability<u64>,
    batch: &mut Vec<Reading>,
) {
    while let Some(first) = batch.first() {
        let minute = floor_minute(first.timestamp_ms);
        let run = batch
            .iter()
            .take_while(|r| floor_minute(r.timestamp_ms) == minute)
            .count();
        output.session(&cap.delayed(&minute)).give_iterator(batch.drain(..run));
    }
}
