//! The predictor's per-station state on one worker, and what it checkpoints.
//!
//! Every station's entry remembers the end of the last window it took in, and whether it
//! changed since the last snapshot. A snapshot encodes exactly the changed stations
//! (docs/design.md §5.6), so a quiet station costs nothing per snapshot.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::ml::snapshot::{Restored, StateEncodeError, encode_parts};
use crate::ml::station::{Models, StationState};

/// One station-state record for the state topic.
#[derive(Clone, Debug)]
pub struct StateRecord {
    /// The station id (the record key).
    pub station: String,
    /// The encoded state ([`crate::ml::snapshot::Saved`]).
    pub value: Vec<u8>,
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
    dirty: Vec<String>,
    restored: Option<Arc<Restored>>,
    /// Windows not taken in because a restored state already had them.
    pub skipped: u64,
    /// Stations this worker took from the restored set.
    pub taken: u64,
}

impl Book {
    /// An empty book; `restored` holds the states of an earlier run.
    pub fn new(restored: Option<Arc<Restored>>) -> Book {
        Book {
            stations: FxHashMap::default(),
            dirty: Vec::new(),
            restored,
            skipped: 0,
            taken: 0,
        }
    }

    /// Stations held.
    pub fn len(&self) -> usize {
        self.stations.len()
    }

    /// Makes sure `station` has an entry: its restored state, else the models' prior.
    pub fn ensure(&mut self, station: &str, models: &Models) {
        if self.stations.contains_key(station) {
            return;
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
        self.stations.insert(station.to_owned(), held);
    }

    /// The entry of a station [`ensure`](Self::ensure)d before.
    pub fn get(&self, station: &str) -> Option<&Held> {
        self.stations.get(station)
    }

    /// The station's state, to take in the window ending at `end`; `None` when the state
    /// has that window already (a restored station replayed from an earlier resume
    /// point) or the station has no entry. Marks the station changed.
    pub fn take_in(&mut self, station: &str, end: u64) -> Option<&mut StationState> {
        let held = self.stations.get_mut(station)?;
        if end <= held.last_end {
            self.skipped += 1;
            return None;
        }
        held.last_end = end;
        if !held.dirty {
            held.dirty = true;
            self.dirty.push(station.to_owned());
        }
        Some(&mut held.state)
    }

    /// Whether any station changed since the last snapshot.
    pub fn has_changes(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Encodes every station changed since the last snapshot and clears the marks.
    pub fn snapshot(&mut self) -> Result<Vec<StateRecord>, (String, StateEncodeError)> {
        let mut records = Vec::with_capacity(self.dirty.len());
        for station in std::mem::take(&mut self.dirty) {
            let Some(held) = self.stations.get_mut(&station) else {
                continue;
            };
            held.dirty = false;
            let value = encode_parts(held.last_end, &held.state).map_err(|e| (station.clone(), e))?;
            records.push(StateRecord {
                station,
                value,
                last_end: held.last_end,
            });
        }
        Ok(records)
    }
}
