//! The predictor's per-station state on one worker, and what it checkpoints.
//!
//! Every station's entry remembers the end of the last window it took in, and whether it
//! changed since the last snapshot. A snapshot encodes exactly the changed stations
//! (docs/design.md §5.6), so a quiet station costs nothing per snapshot, plus a tombstone
//! for each station forgotten since.
//!
//! The book is bounded like the pane builder's roster ([`Tenancy`], docs/design.md §4.11):
//! a station silent for the TTL is forgotten, and it holds at most twice the worker's
//! share of `--max-stations`. The slack covers stations the pane builder has already
//! replaced whose last windows are younger here than there. Whether a returning station
//! starts afresh depends only on its own windows (a gap of at least the TTL), never on
//! when a sweep ran, so predictions do not depend on the worker count.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::dataflow::StationLimits;
use crate::dataflow::tenancy::{Admission, Tenancy};
use crate::ml::snapshot::{Restored, StateEncodeError, encode_parts};
use crate::ml::station::{Models, StationState};

/// One station-state record for the state topic.
#[derive(Clone, Debug)]
pub struct StateRecord {
    /// The station id (the record key).
    pub station: String,
    /// The encoded state ([`crate::ml::snapshot::Saved`]); `None` is a tombstone: the
    /// station was forgotten.
    pub value: Option<Vec<u8>>,
    /// The state has taken in the station's windows up to this end (ms), so it may be
    /// written only once their predictions are in the broker.
    pub last_end: u64,
}

/// A station's state on this worker.
pub(super) struct Held {
    pub state: StationState,
    /// End of the last window taken in; windows at or before it are not taken again.
    pub last_end: u64,
    dirty: bool,
}

/// Every station of one worker's predictor.
pub(super) struct Book {
    stations: FxHashMap<String, Held>,
    tenancy: Tenancy<String>,
    dirty: Vec<String>,
    /// Stations forgotten since the last snapshot, with their last window end.
    forgotten: Vec<(String, u64)>,
    restored: Option<Arc<Restored>>,
    /// Windows not taken in because a restored state already had them.
    pub skipped: u64,
    /// Stations this worker took from the restored set.
    pub taken: u64,
}

impl Book {
    /// An empty book; `restored` holds the states of an earlier run.
    pub fn new(restored: Option<Arc<Restored>>, limits: StationLimits) -> Book {
        Book {
            stations: FxHashMap::default(),
            tenancy: Tenancy::new(limits.per_worker.saturating_mul(2), limits.ttl_ms),
            dirty: Vec::new(),
            forgotten: Vec::new(),
            restored,
            skipped: 0,
            taken: 0,
        }
    }

    /// Stations held.
    pub fn len(&self) -> usize {
        self.stations.len()
    }

    /// Makes sure `station` has an entry for a window ending at `end`: its restored
    /// state, else the models' prior. `false` when the book is full (see the module doc).
    pub fn ensure(&mut self, station: &str, end: u64, models: &Models) -> bool {
        if self.stations.contains_key(station) {
            return true;
        }
        let key = station.to_owned();
        match self.tenancy.visit(&key, end) {
            Admission::Held => {}
            Admission::Admitted { displaced } => {
                if let Some(d) = displaced {
                    self.forget(d);
                }
            }
            Admission::Refused => return false,
        }
        let held = match self.restored.as_ref().and_then(|r| r.take(station)) {
            Some(saved) => {
                self.taken += 1;
                Held {
                    state: saved.state,
                    last_end: saved.last_end,
                    dirty: false,
                }
            }
            None => Held {
                state: StationState::new(models),
                last_end: 0,
                dirty: false,
            },
        };
        self.stations.insert(key, held);
        true
    }

    fn forget(&mut self, station: String) {
        if let Some(held) = self.stations.remove(&station) {
            self.forgotten.push((station, held.last_end));
        }
    }

    /// Forgets the stations whose last window is a TTL before `end` (swept at most every
    /// ten minutes of event time).
    pub fn expire(&mut self, end: u64) {
        for station in self.tenancy.expire(end) {
            self.forget(station);
        }
    }

    /// The entry of a station [`ensure`](Self::ensure)d before.
    pub fn get(&self, station: &str) -> Option<&Held> {
        self.stations.get(station)
    }

    /// The station's state, to take in the window ending at `end`; `None` when the state
    /// has that window already (a restored station replayed from an earlier resume
    /// point) or the station has no entry. A station silent for the TTL starts afresh.
    /// Marks the station changed.
    pub fn take_in(&mut self, station: &str, end: u64, models: &Models) -> Option<&mut StationState> {
        let held = self.stations.get_mut(station)?;
        if end <= held.last_end {
            self.skipped += 1;
            return None;
        }
        if held.last_end > 0 && self.tenancy.expired(held.last_end, end) {
            held.state = StationState::new(models);
        }
        self.tenancy.visit(station, end);
        held.last_end = end;
        if !held.dirty {
            held.dirty = true;
            self.dirty.push(station.to_owned());
        }
        Some(&mut held.state)
    }

    /// Whether any station changed or was forgotten since the last snapshot.
    pub fn has_changes(&self) -> bool {
        !self.dirty.is_empty() || !self.forgotten.is_empty()
    }

    /// Encodes every station changed since the last snapshot, and a tombstone for every
    /// one forgotten, and clears the marks.
    pub fn snapshot(&mut self) -> Result<Vec<StateRecord>, (String, StateEncodeError)> {
        let mut records = Vec::with_capacity(self.dirty.len() + self.forgotten.len());
        // Tombstones first: a station forgotten and seen again since has both, and its
        // state must land after its tombstone.
        for (station, last_end) in &self.forgotten {
            records.push(StateRecord {
                station: station.clone(),
                value: None,
                last_end: *last_end,
            });
        }
        // Every state is encoded before any mark is cleared: a failure leaves the book as
        // it was, so no later snapshot can claim a state that was never written.
        for station in &self.dirty {
            let Some(held) = self.stations.get(station) else {
                continue;
            };
            let value = encode_parts(held.last_end, &held.state).map_err(|e| (station.clone(), e))?;
            records.push(StateRecord {
                station: station.clone(),
                value: Some(value),
                last_end: held.last_end,
            });
        }
        self.forgotten.clear();
        for station in std::mem::take(&mut self.dirty) {
            if let Some(held) = self.stations.get_mut(&station) {
                held.dirty = false;
            }
        }
        Ok(records)
    }
}
