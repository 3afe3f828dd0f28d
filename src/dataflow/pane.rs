//! Per-minute panes: the unit the sliding windows are built from.
//!
//! Raw readings are exchanged by station so that all of a station's readings meet on one
//! worker. There, readings are stashed by event minute until the frontier passes the
//! minute; then each (station, minute) is deduplicated and folded into one [`Pane`] of
//! exact integer moments. A pane enters the differential collection as a **temporal
//! filter**: `+1` at `minute + 1 min` (the first window end that covers it) and `−1` at
//! `minute + 6 min` (the first end that no longer does). Every reading therefore turns into
//! at most two differential updates per *pane*, not per reading, which is what makes the
//! arrangement-based windows cheap (docs/design.md §4.10: panes measured 3–4× faster than raw updates).
//!
//! Deduplication needs all copies of a (station, timestamp) in one place, which is why it
//! happens here, after the exchange, rather than in the sources.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use differential_dataflow::{AsCollection, Hashable, VecCollection};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::core::OkErr;
use timely::dataflow::operators::generic::Operator;

use super::tenancy::{Admission, Tenancy};
use crate::metrics::Metrics;
use crate::schema::{InvalidReason, MINUTE_MS, Reading, StationId, Var, floor_minute};

/// Window length in minutes; a pane lives in this many consecutive windows.
pub const WINDOW_MINUTES: u64 = 5;

/// A station as differential sees it: a 64-bit hash of its identifier.
///
/// Arrangements sort and move their keys constantly; a `u64` compares in one instruction
/// where a string needs `memcmp`. The hash is also the routing hash (see the `Hashable`
/// impl), so a station's panes, windows, trends and name all live on one worker. The pane
/// builder, which sees the identifiers, records each key's name in [`StationNames`].
///
/// Two identifiers can share a key: by chance (probability ≈ n²/2⁶⁵) or by design, since
/// FNV collisions can be constructed and station ids come from untrusted producers. The
/// first identifier seen keeps the key; readings of any other are rejected as
/// [`Refused`] (reason `station_key_collision`), never merged into its windows, and
/// the run goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StationKey(pub u64);

impl Hashable for StationKey {
    type Output = u64;
    fn hashed(&self) -> u64 {
        self.0
    }
}

impl StationKey {
    /// FNV-1a over the bytes, finished with the SplitMix64 mixer so every bit (the
    /// exchange uses the low ones) depends on every byte.
    pub fn of(station: &str) -> StationKey {
        #[cfg(test)]
        if let Some(alias) = test_keys::alias(station) {
            return StationKey::hash(&alias);
        }
        StationKey::hash(station)
    }

    fn hash(station: &str) -> StationKey {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in station.as_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        StationKey(h ^ (h >> 31))
    }
}

/// Collisions on demand, for the operator tests: a real FNV collision is costly to find,
/// so tests alias one id to another's key on their own thread.
#[cfg(test)]
mod test_keys {
    use std::cell::RefCell;

    thread_local! {
        static ALIASES: RefCell<Vec<(String, String)>> = const { RefCell::new(Vec::new()) };
    }

    pub fn alias(station: &str) -> Option<String> {
        ALIASES.with(|a| {
            a.borrow()
                .iter()
                .find(|(id, _)| id == station)
                .map(|(_, to)| to.clone())
        })
    }

    /// Runs `f` with each `(id, like)` pair giving `id` the key of `like`.
    pub fn with<R>(aliases: &[(&str, &str)], f: impl FnOnce() -> R) -> R {
        ALIASES.with(|a| *a.borrow_mut() = aliases.iter().map(|(x, y)| (x.to_string(), y.to_string())).collect());
        let out = f();
        ALIASES.with(|a| a.borrow_mut().clear());
        out
    }
}

#[cfg(test)]
pub(crate) use test_keys::with as with_test_keys;

/// The stations this worker holds: their names by key, and which may stay
/// ([`Tenancy`]). Shared by the pane builder (writer) and the emitter (reader) of one
/// worker, hence `Rc`.
pub type StationNames = Rc<RefCell<Roster>>;

/// Station names by key under the worker's admission policy.
#[derive(Debug)]
pub struct Roster {
    names: FxHashMap<u64, StationId>,
    tenancy: Tenancy<u64>,
}

impl Roster {
    /// At most `cap` stations, each forgotten after `ttl_ms` of silence (event time).
    pub fn new(cap: usize, ttl_ms: u64) -> Roster {
        Roster {
            names: FxHashMap::default(),
            tenancy: Tenancy::new(cap, ttl_ms),
        }
    }

    /// The name of a held key.
    pub fn get(&self, key: u64) -> Option<&StationId> {
        self.names.get(&key)
    }

    /// Stations held.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Decides whether `station` (with `key`), active in `minute`, may enter the windows.
    fn admit(&mut self, key: u64, station: &StationId, minute: u64) -> Result<(), Refusal> {
        if let Some(known) = self.names.get(&key)
            && known != station
        {
            return Err(Refusal::Collision {
                owner: known.clone(),
                key,
            });
        }
        match self.tenancy.visit(&key, minute) {
            Admission::Held => Ok(()),
            Admission::Admitted { displaced } => {
                if let Some(d) = displaced {
                    self.names.remove(&d);
                }
                self.names.insert(key, station.clone());
                Ok(())
            }
            Admission::Refused => Err(Refusal::StationLimit),
        }
    }

    /// Forgets the stations silent for the TTL at `minute`.
    fn expire(&mut self, minute: u64) {
        for key in self.tenancy.expire(minute) {
            self.names.remove(&key);
        }
    }
}

impl Default for Roster {
    /// No cap and no TTL (tests and benchmarks).
    fn default() -> Self {
        Roster::new(usize::MAX, u64::MAX)
    }
}

/// Exact moments of one variable over the readings of one pane.
///
/// Time `t` is milliseconds since the pane's minute start (0..60 000). After deduplication
/// a pane holds at most 60 000 readings (one per millisecond), so every `i64` sum is
/// bounded by 60 000 × (6·10⁴ × 1.1·10⁶) < 2⁶³: the sums cannot overflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VarMoments {
    /// Readings carrying the variable.
    pub count: u32,
    /// Smallest value, milli-units.
    pub min: i32,
    /// Largest value, milli-units.
    pub max: i32,
    /// Σv.
    pub sum: i64,
    /// Σv².
    pub sumsq: i64,
    /// Σt.
    pub st: i64,
    /// Σt².
    pub stt: i64,
    /// Σt·v.
    pub stv: i64,
}

impl Default for VarMoments {
    fn default() -> Self {
        VarMoments {
            count: 0,
            min: i32::MAX,
            max: i32::MIN,
            sum: 0,
            sumsq: 0,
            st: 0,
            stt: 0,
            stv: 0,
        }
    }
}

impl VarMoments {
    fn add(&mut self, t: i64, v: i32) {
        let v64 = i64::from(v);
        self.count += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += v64;
        self.sumsq += v64 * v64;
        self.st += t;
        self.stt += t * t;
        self.stv += t * v64;
    }
}

/// All readings of one station in one event minute, deduplicated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Pane {
    /// Distinct readings.
    pub count: u32,
    /// Moments per variable in [`Var::ALL`] order.
    pub vars: [VarMoments; 4],
}

/// One reading as stashed while its minute is open.
#[derive(Clone, Copy, Debug)]
struct Sample {
    offset_ms: u32,
    seq: u64,
    values: [i32; 4],
}

impl Pane {
    /// Folds samples into a pane, keeping the first (lowest `seq`) of each timestamp.
    /// Returns the pane and how many duplicates were dropped.
    fn from_samples(samples: &mut [Sample]) -> (Pane, u64) {
        samples.sort_unstable_by_key(|s| (s.offset_ms, s.seq));
        let mut pane = Pane::default();
        let mut last = None;
        let mut duplicates = 0;
        for s in samples.iter() {
            if last == Some(s.offset_ms) {
                duplicates += 1;
                continue;
            }
            last = Some(s.offset_ms);
            pane.count += 1;
            for var in Var::ALL {
                let v = s.values[var as usize];
                if v != crate::schema::MISSING {
                    pane.vars[var as usize].add(i64::from(s.offset_ms), v);
                }
            }
        }
        (pane, duplicates)
    }
}

/// Why the pane builder refused a reading's station.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Its id shares its key with an id this worker already holds.
    Collision {
        /// The id that holds the key.
        owner: StationId,
        /// The shared key.
        key: u64,
    },
    /// The worker holds its share of `--max-stations` and none may make way.
    StationLimit,
}

impl Refusal {
    /// The invalid-reading reason it is counted and dead-lettered under.
    pub fn reason(&self) -> InvalidReason {
        match self {
            Refusal::Collision { .. } => InvalidReason::StationKeyCollision,
            Refusal::StationLimit => InvalidReason::StationLimit,
        }
    }
}

/// A reading the pane builder refused, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// The rejected reading.
    pub reading: Reading,
    /// Why.
    pub refusal: Refusal,
}

/// What the pane builder sends: pane updates, or refused readings.
pub type PaneOutput = Result<((StationKey, (u64, Pane)), u64, isize), Refused>;

/// Open minutes: a capability for the minute and each station's samples in it.
type OpenMinutes = BTreeMap<u64, (Capability<u64>, FxHashMap<StationId, Vec<Sample>>)>;

/// The differential collection of live panes: `(station, (pane minute, pane))`, each
/// present from `minute + 1 min` until `minute + 6 min`.
pub type PaneCollection<'s> = VecCollection<'s, u64, (StationKey, (u64, Pane)), isize>;

/// Builds panes from readings whose timely time is their event minute (epoch ms), and
/// returns them with the readings refused (key collision, station limit).
pub fn build_panes<'s>(
    readings: StreamVec<'s, u64, Reading>,
    names: StationNames,
    metrics: Arc<Metrics>,
) -> (PaneCollection<'s>, StreamVec<'s, u64, Refused>) {
    let slot = readings.scope().index();
    // Route with the same hash differential uses for its own arrangement exchange, so the
    // panes are already on the worker that will reduce them.
    let pact = Exchange::new(|r: &Reading| StationKey::of(&r.station).0);
    let (panes, collisions) = readings
        .unary_frontier::<CapacityContainerBuilder<Vec<PaneOutput>>, _, _, _>(pact, "Panes", move |_cap, _info| {
            let mut open: OpenMinutes = BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each(|cap, data| {
                    for r in data.drain(..) {
                        let minute = floor_minute(r.timestamp_ms);
                        let (_, stations) = open
                            .entry(minute)
                            .or_insert_with(|| (cap.delayed(&minute, 0), FxHashMap::default()));
                        let sample = Sample {
                            offset_ms: (r.timestamp_ms - minute) as u32,
                            seq: r.seq,
                            values: r.values,
                        };
                        stations.entry(r.station).or_default().push(sample);
                    }
                });
                let mut duplicates = 0;
                let mut rejected = [0u64; 2];
                let mut closed = None;
                while let Some(entry) = open.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let minute = *entry.key();
                    closed = Some(minute);
                    let (cap, stations) = entry.remove();
                    let mut session = output.session(&cap);
                    let mut names = names.borrow_mut();
                    for (station, mut samples) in stations {
                        let key = StationKey::of(&station);
                        if let Err(refusal) = names.admit(key.0, &station, minute) {
                            rejected[usize::from(refusal == Refusal::StationLimit)] += samples.len() as u64;
                            for s in samples {
                                let reading = Reading {
                                    station: station.clone(),
                                    timestamp_ms: minute + u64::from(s.offset_ms),
                                    seq: s.seq,
                                    values: s.values,
                                };
                                session.give(Err(Refused {
                                    reading,
                                    refusal: refusal.clone(),
                                }));
                            }
                            continue;
                        }
                        let (pane, dups) = Pane::from_samples(&mut samples);
                        duplicates += dups;
                        let enter = minute + MINUTE_MS;
                        let leave = minute + (WINDOW_MINUTES + 1) * MINUTE_MS;
                        session.give(Ok(((key, (minute, pane)), enter, 1isize)));
                        session.give(Ok(((key, (minute, pane)), leave, -1isize)));
                    }
                }
                if duplicates > 0 {
                    metrics.add_duplicates(duplicates);
                }
                for (reason, n) in [InvalidReason::StationKeyCollision, InvalidReason::StationLimit]
                    .into_iter()
                    .zip(rejected)
                {
                    if n > 0 {
                        metrics.add_invalid(reason, n);
                    }
                }
                if let Some(minute) = closed {
                    let mut names = names.borrow_mut();
                    names.expire(minute);
                    metrics.set_stations_live(slot, names.len() as u64);
                }
            }
        })
        .ok_err::<Vec<_>, _, Vec<_>, _, _>(|x| x);
    (panes.as_collection(), collisions)
}
