//! The serving store: what the REST API answers from.
//!
//! Per station it keeps the windows and predictions of the last `--history` of event time
//! (the newest is "latest"), and beside them a bounded feed of anomalous predictions.
//! Writers are the dataflow's sink operators ([`crate::sinks::store`]) or the `serve` consumer; readers
//! are API requests on another thread.
//!
//! **Why this shape.** Stations are spread over [`SHARDS`] `RwLock`ed hash maps, so a
//! writer and a reader meet only when they touch the same shard, and a worker takes each
//! shard's lock once per batch rather than once per record. Records are held inline in a
//! compact form ([`record`]): a reader copies the ones it needs under the read lock and
//! rebuilds and serialises them after releasing it, so no lock is ever held across I/O or
//! an `await`, and the longest a reader can hold up a worker is a copy of at most `limit`
//! records (10,000 × ~250 bytes).
//!
//! **Idempotent.** Inserting is an upsert by (station, window end): the replays of an
//! at-least-once source (a restarted pipeline, `serve` re-reading a topic) change nothing.
//! Each station's records stay ordered by window end whatever order they arrive in.
//!
//! **Bounded.** A station keeps records whose window end is within `history` of its own
//! newest; a station silent for longer than `history` (by the newest event time seen
//! anywhere) is dropped by a sweep that runs once per hour of event time.

mod record;

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use rustc_hash::{FxBuildHasher, FxHashMap};

use crate::schema::{MINUTE_MS, Prediction, WindowFeatures};
pub use record::{StoredFeatures, StoredPrediction};

/// Lock shards. More than the cores that could write at once, so workers rarely meet.
pub const SHARDS: usize = 16;
/// Event time between two sweeps for silent stations.
const SWEEP_EVERY_MS: u64 = 60 * MINUTE_MS;

/// How much the store keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// Event time of history kept per station, ms.
    pub history_ms: u64,
    /// Anomalous predictions kept in the feed.
    pub anomaly_capacity: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            history_ms: 24 * 60 * MINUTE_MS,
            anomaly_capacity: 1000,
        }
    }
}

/// A stored record: ordered by window end within its station.
trait Timed {
    fn end(&self) -> u64;
}

impl Timed for StoredFeatures {
    fn end(&self) -> u64 {
        StoredFeatures::end(self)
    }
}

impl Timed for StoredPrediction {
    fn end(&self) -> u64 {
        StoredPrediction::end(self)
    }
}

/// Why a lookup found nothing; both are a 404, with different messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// No record of any kind for this station.
    Station,
    /// The station is known, but has no record of the kind asked for (e.g. no
    /// predictions when the run has `--no-ml`).
    Record,
}

/// Which records of a station a history query wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    /// Smallest window end, inclusive.
    pub from: Option<u64>,
    /// Largest window end, inclusive.
    pub to: Option<u64>,
    /// At most this many, the newest of the range.
    pub limit: usize,
}

/// The answer to a history query.
#[derive(Clone, Debug)]
pub struct History<T> {
    /// Records in ascending window end.
    pub items: Vec<T>,
    /// More records matched than `limit`; the oldest were left out.
    pub truncated: bool,
}

/// One station's current state, for the station list.
#[derive(Clone, Debug)]
pub struct StationSummary {
    /// The station.
    pub station_id: Box<str>,
    /// Its newest window.
    pub features: Option<StoredFeatures>,
    /// Its newest prediction.
    pub prediction: Option<StoredPrediction>,
    /// Windows held in its history.
    pub windows: usize,
}

#[derive(Debug, Default)]
struct Station {
    features: VecDeque<StoredFeatures>,
    predictions: VecDeque<StoredPrediction>,
}

impl Station {
    fn newest_end(&self) -> u64 {
        let f = self.features.back().map_or(0, |r| r.end());
        let p = self.predictions.back().map_or(0, |r| r.end());
        f.max(p)
    }

    fn len(&self) -> usize {
        self.features.len() + self.predictions.len()
    }

    /// Drops records more than `history` older than the station's newest; returns how many.
    fn trim(&mut self, history_ms: u64) -> usize {
        let keep_from = self.newest_end().saturating_sub(history_ms);
        trim_front(&mut self.features, keep_from) + trim_front(&mut self.predictions, keep_from)
    }
}

/// Drops records ending before `keep_from`. Only the front is looked at: records leave
/// in the order they came, one or two per insert.
fn trim_front<T: Timed>(records: &mut VecDeque<T>, keep_from: u64) -> usize {
    let mut n = 0;
    while records.front().is_some_and(|r| r.end() < keep_from) {
        records.pop_front();
        n += 1;
    }
    n
}

/// Puts `record` in its place by window end, replacing an equal end. Returns true when
/// the deque grew.
fn upsert<T: Timed>(records: &mut VecDeque<T>, record: T, bound: usize) -> bool {
    let end = record.end();
    if records.len() == records.capacity() {
        // Doubling, as usual, but never past the history's size: a full day would
        // otherwise sit in a deque of 2,048 slots for 1,441 records, 42 % wasted.
        let extra = records
            .capacity()
            .max(4)
            .min(bound.saturating_sub(records.len()))
            .max(1);
        records.reserve_exact(extra);
    }
    match records.back() {
        None => {}
        Some(last) if last.end() < end => {}
        Some(_) => {
            let i = records.partition_point(|r| r.end() < end);
            if records.get(i).is_some_and(|r| r.end() == end) {
                records[i] = record;
                return false;
            }
            records.insert(i, record);
            return true;
        }
    }
    records.push_back(record);
    true
}

/// Copies the newest `range.limit` records with window end in the range.
fn select<T: Timed + Clone>(records: &VecDeque<T>, range: &Range) -> History<T> {
    let start = range.from.map_or(0, |from| records.partition_point(|r| r.end() < from));
    let stop = range
        .to
        .map_or(records.len(), |to| records.partition_point(|r| r.end() <= to));
    let matched = stop.saturating_sub(start);
    let first = stop.saturating_sub(matched.min(range.limit));
    History {
        items: records.range(first..stop).cloned().collect(),
        truncated: matched > range.limit,
    }
}

type Shard = FxHashMap<Box<str>, Station>;

/// The store. Share it as `Arc<Store>`.
#[derive(Debug)]
pub struct Store {
    shards: Box<[RwLock<Shard>]>,
    /// Anomalous predictions in ascending window end.
    anomalies: Mutex<VecDeque<Arc<Prediction>>>,
    config: StoreConfig,
    /// Features plus predictions held, for the gauge.
    records: AtomicU64,
    /// Stations held, for the gauge.
    stations: AtomicU64,
    /// The newest window end inserted anywhere.
    newest_end: AtomicU64,
    /// `newest_end` at the last sweep.
    swept_at: AtomicU64,
}

// A poisoned lock means a thread panicked mid-update of plain collections; every
// operation leaves them consistent between statements, so serving on is safe, and the
// API must not turn one bug into a permanent outage.
fn read(shard: &RwLock<Shard>) -> RwLockReadGuard<'_, Shard> {
    shard.read().unwrap_or_else(|p| p.into_inner())
}
fn write(shard: &RwLock<Shard>) -> RwLockWriteGuard<'_, Shard> {
    shard.write().unwrap_or_else(|p| p.into_inner())
}
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn shard_of(station: &str) -> usize {
    (FxBuildHasher.hash_one(station) % SHARDS as u64) as usize
}

impl Store {
    /// An empty store.
    pub fn new(config: StoreConfig) -> Self {
        Store {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            anomalies: Mutex::default(),
            config,
            records: AtomicU64::new(0),
            stations: AtomicU64::new(0),
            newest_end: AtomicU64::new(0),
            swept_at: AtomicU64::new(0),
        }
    }

    /// What the store keeps.
    pub fn config(&self) -> StoreConfig {
        self.config
    }

    /// Stations held.
    pub fn station_count(&self) -> u64 {
        self.stations.load(Relaxed)
    }

    /// Features and predictions held.
    pub fn record_count(&self) -> u64 {
        self.records.load(Relaxed)
    }

    /// Anomalies held in the feed.
    pub fn anomaly_count(&self) -> usize {
        lock(&self.anomalies).len()
    }

    /// Inserts a batch of windows.
    pub fn insert_features(&self, batch: impl IntoIterator<Item = WindowFeatures>) {
        let packed = batch.into_iter().map(|f| {
            let stored = StoredFeatures::pack(&f);
            (f.station_id, stored)
        });
        self.insert(packed, |s| &mut s.features);
    }

    /// Inserts a batch of predictions; the anomalous ones also enter the feed.
    pub fn insert_predictions(&self, batch: impl IntoIterator<Item = Prediction>) {
        let mut flagged = Vec::new();
        let packed = batch.into_iter().map(|p| {
            if p.anomaly.is_anomaly {
                flagged.push(Arc::new(p.clone()));
            }
            StoredPrediction::pack(p)
        });
        self.insert(packed, |s| &mut s.predictions);
        if !flagged.is_empty() {
            self.push_anomalies(flagged);
        }
    }

    fn insert<T: Timed>(
        &self,
        batch: impl IntoIterator<Item = (String, T)>,
        deque: impl Fn(&mut Station) -> &mut VecDeque<T>,
    ) {
        let mut by_shard: [Vec<(String, T)>; SHARDS] = Default::default();
        let mut newest = 0;
        for (id, record) in batch {
            newest = newest.max(record.end());
            by_shard[shard_of(&id)].push((id, record));
        }
        let (mut added, mut removed, mut new_stations) = (0u64, 0u64, 0u64);
        // One record per station-minute fills a history of `history` minutes (+1: both
        // ends of the span are kept).
        let bound = (self.config.history_ms / MINUTE_MS) as usize + 1;
        for (shard, records) in self.shards.iter().zip(by_shard) {
            if records.is_empty() {
                continue;
            }
            let mut shard = write(shard);
            for (id, record) in records {
                let station = match shard.get_mut(id.as_str()) {
                    Some(s) => s,
                    None => {
                        new_stations += 1;
                        shard.entry(id.into_boxed_str()).or_default()
                    }
                };
                // A record older than the station's history would be trimmed at once.
                if record.end() + self.config.history_ms < station.newest_end() {
                    continue;
                }
                if upsert(deque(station), record, bound) {
                    added += 1;
                }
                removed += station.trim(self.config.history_ms) as u64;
            }
        }
        self.stations.fetch_add(new_stations, Relaxed);
        self.records.fetch_add(added, Relaxed);
        self.records.fetch_sub(removed, Relaxed);
        let newest = self.newest_end.fetch_max(newest, Relaxed).max(newest);
        let swept = self.swept_at.load(Relaxed);
        if newest >= swept + SWEEP_EVERY_MS && self.swept_at.compare_exchange(swept, newest, Relaxed, Relaxed).is_ok() {
            self.sweep(newest);
        }
    }

    /// Drops stations whose newest record is older than `newest − history`.
    fn sweep(&self, newest: u64) {
        let keep_from = newest.saturating_sub(self.config.history_ms);
        for shard in self.shards.iter() {
            let mut shard = write(shard);
            let mut gone = (0u64, 0u64);
            shard.retain(|_, station| {
                let keep = station.newest_end() >= keep_from;
                if !keep {
                    gone.0 += 1;
                    gone.1 += station.len() as u64;
                }
                keep
            });
            self.stations.fetch_sub(gone.0, Relaxed);
            self.records.fetch_sub(gone.1, Relaxed);
        }
    }

    fn push_anomalies(&self, flagged: Vec<Arc<Prediction>>) {
        let mut feed = lock(&self.anomalies);
        for p in flagged {
            let end = p.window_end;
            if feed.len() >= self.config.anomaly_capacity && feed.front().is_some_and(|f| f.window_end > end) {
                continue; // older than everything a full feed keeps
            }
            // Same end and station: a replay; replace it. Scan only the entries of that end.
            let start = feed.partition_point(|f| f.window_end < end);
            let stop = feed.partition_point(|f| f.window_end <= end);
            match (start..stop).find(|&i| feed[i].station_id == p.station_id) {
                Some(i) => feed[i] = p,
                None => feed.insert(stop, p),
            }
            while feed.len() > self.config.anomaly_capacity {
                feed.pop_front();
            }
        }
    }

    fn with_station<R>(&self, id: &str, f: impl FnOnce(&Station) -> Result<R, Missing>) -> Result<R, Missing> {
        let shard = read(&self.shards[shard_of(id)]);
        shard.get(id).ok_or(Missing::Station).and_then(f)
    }

    // Readers copy the compact records out under the lock and rebuild the wire records
    // after releasing it.

    /// The newest window of a station.
    pub fn latest_features(&self, id: &str) -> Result<WindowFeatures, Missing> {
        let stored = self.with_station(id, |s| s.features.back().copied().ok_or(Missing::Record))?;
        Ok(stored.unpack(id))
    }

    /// The newest prediction of a station.
    pub fn latest_prediction(&self, id: &str) -> Result<Prediction, Missing> {
        let stored = self.with_station(id, |s| s.predictions.back().cloned().ok_or(Missing::Record))?;
        Ok(stored.unpack(id))
    }

    /// A station's windows in `range`.
    pub fn features_history(&self, id: &str, range: &Range) -> Result<History<WindowFeatures>, Missing> {
        let h = self.with_station(id, |s| Ok(select(&s.features, range)))?;
        Ok(History {
            items: h.items.iter().map(|f| f.unpack(id)).collect(),
            truncated: h.truncated,
        })
    }

    /// A station's predictions in `range`.
    pub fn predictions_history(&self, id: &str, range: &Range) -> Result<History<Prediction>, Missing> {
        let h = self.with_station(id, |s| Ok(select(&s.predictions, range)))?;
        Ok(History {
            items: h.items.iter().map(|p| p.unpack(id)).collect(),
            truncated: h.truncated,
        })
    }

    /// The newest anomalies with window end after `since`, newest first.
    pub fn anomalies(&self, since: Option<u64>, limit: usize) -> Vec<Arc<Prediction>> {
        let feed = lock(&self.anomalies);
        let after = since.map_or(0, |s| feed.partition_point(|p| p.window_end <= s));
        feed.range(after..).rev().take(limit).cloned().collect()
    }

    /// Every station's newest records, sorted by station id: the first `limit`, and the
    /// total number of stations.
    pub fn stations(&self, limit: usize) -> (usize, Vec<StationSummary>) {
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            let shard = read(shard);
            all.extend(shard.iter().map(|(id, s)| StationSummary {
                station_id: id.clone(),
                features: s.features.back().copied(),
                prediction: s.predictions.back().cloned(),
                windows: s.features.len(),
            }));
        }
        let total = all.len();
        all.sort_unstable_by(|a, b| a.station_id.cmp(&b.station_id));
        all.truncate(limit);
        (total, all)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::schema::{AnomalyRecord, ForecastRecord, ModelVersions, Trend, VariableStats};

    pub(crate) fn window(station: &str, end: u64, mean: f64) -> WindowFeatures {
        let stats = VariableStats {
            count: 6,
            mean,
            std: Some(0.1),
            min: mean - 0.5,
            max: mean + 0.5,
            slope_per_hour: None,
        };
        WindowFeatures {
            station_id: station.into(),
            window_start: end - 5 * MINUTE_MS,
            window_end: end,
            count: 6,
            temperature: Some(stats),
            humidity: None,
            pressure: None,
            wind_speed: None,
            trend: Trend::default(),
        }
    }

    pub(crate) fn prediction(station: &str, end: u64, anomalous: bool) -> Prediction {
        let forecast = |h: u32| ForecastRecord {
            horizon_hours: h,
            temperature: 10.0,
            lower: 9.0,
            upper: 11.0,
        };
        Prediction {
            station_id: station.into(),
            window_end: end,
            temperature: 10.0,
            forecasts: [forecast(1), forecast(6), forecast(24)],
            forecast_variant: "full".into(),
            anomaly: AnomalyRecord {
                score: if anomalous { 0.9 } else { 0.1 },
                is_anomaly: anomalous,
                reasons: if anomalous {
                    vec!["temperature jump".into()]
                } else {
                    vec![]
                },
            },
            models: ModelVersions {
                forecast: "v1".into(),
                anomaly: "v1".into(),
            },
        }
    }

    const T0: u64 = 1_795_176_060_000;

    fn all(limit: usize) -> Range {
        Range {
            from: None,
            to: None,
            limit,
        }
    }

    #[test]
    fn upserts_in_order_and_answers_ranges() {
        let store = Store::new(StoreConfig::default());
        // Out of order, with a replayed duplicate carrying a changed value.
        store.insert_features([3, 1, 2, 1].map(|m| window("a", T0 + m * MINUTE_MS, m as f64)));
        store.insert_features([window("a", T0 + MINUTE_MS, 9.0)]);
        let h = store.features_history("a", &all(10)).unwrap();
        let ends: Vec<u64> = h.items.iter().map(|w| (w.window_end - T0) / MINUTE_MS).collect();
        assert_eq!(ends, [1, 2, 3]);
        assert_eq!(h.items[0].temperature.as_ref().unwrap().mean, 9.0);
        assert_eq!(store.record_count(), 3);
        assert_eq!(store.latest_features("a").unwrap().window_end, T0 + 3 * MINUTE_MS);
        let h = store.features_history("a", &all(2)).unwrap();
        assert!(h.truncated);
        assert_eq!(h.items[0].window_end, T0 + 2 * MINUTE_MS);
        let r = Range {
            from: Some(T0 + 2 * MINUTE_MS),
            to: Some(T0 + 2 * MINUTE_MS),
            limit: 10,
        };
        let h = store.features_history("a", &r).unwrap();
        assert_eq!((h.items.len(), h.truncated), (1, false));
        assert_eq!(store.latest_prediction("a").unwrap_err(), Missing::Record);
        assert_eq!(store.latest_features("b").unwrap_err(), Missing::Station);
    }

    #[test]
    fn history_is_bounded_per_station_and_silent_stations_are_swept() {
        let store = Store::new(StoreConfig {
            history_ms: 10 * MINUTE_MS,
            anomaly_capacity: 10,
        });
        store.insert_features([window("quiet", T0, 1.0)]);
        for m in 0..200 {
            store.insert_features([window("busy", T0 + m * MINUTE_MS, 1.0)]);
        }
        let h = store.features_history("busy", &all(1000)).unwrap();
        assert_eq!(
            h.items.len(),
            11,
            "window ends within 10 minutes of the newest, inclusive"
        );
        assert_eq!(store.latest_features("quiet").unwrap_err(), Missing::Station);
        assert_eq!((store.station_count(), store.record_count()), (1, 11));
        // Too old for the history: ignored rather than inserted and trimmed.
        store.insert_features([window("busy", T0, 1.0)]);
        assert_eq!(store.record_count(), 11);
    }

    #[test]
    fn anomaly_feed_is_bounded_deduplicated_and_newest_first() {
        let store = Store::new(StoreConfig {
            history_ms: 24 * 60 * MINUTE_MS,
            anomaly_capacity: 3,
        });
        store.insert_predictions((0..5).map(|m| prediction("a", T0 + m * MINUTE_MS, m % 2 == 0)));
        store.insert_predictions([prediction("b", T0 + 4 * MINUTE_MS, true)]);
        store.insert_predictions([prediction("b", T0 + 4 * MINUTE_MS, true)]);
        let feed = store.anomalies(None, 10);
        let got: Vec<(&str, u64)> = feed
            .iter()
            .map(|p| (p.station_id.as_str(), (p.window_end - T0) / MINUTE_MS))
            .collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[2], ("a", 2));
        assert!(got[..2].contains(&("a", 4)) && got[..2].contains(&("b", 4)));
        assert_eq!(store.anomalies(Some(T0 + 2 * MINUTE_MS), 10).len(), 2);
        assert_eq!(store.anomalies(None, 1).len(), 1);
    }

    #[test]
    fn stations_are_listed_sorted_with_their_latest() {
        let store = Store::new(StoreConfig::default());
        store.insert_features(["c", "a", "b"].map(|s| window(s, T0, 1.0)));
        store.insert_predictions([prediction("a", T0, false)]);
        let (total, list) = store.stations(2);
        assert_eq!(total, 3);
        let ids: Vec<&str> = list.iter().map(|s| &*s.station_id).collect();
        assert_eq!(ids, ["a", "b"]);
        assert!(list[0].prediction.is_some() && list[1].prediction.is_none());
        assert_eq!(list[1].features.map(|f| f.end()), Some(T0));
    }
}
