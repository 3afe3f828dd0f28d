//! Which stations a worker holds state for: admission under a cap, and forgetting.
//!
//! Station ids come from untrusted producers, so the set of stations must be bounded by
//! policy, not by the input (docs/design.md §4.11). Every per-station structure of a worker
//! (the pane builder's names, the predictor's states) keeps a [`Tenancy`]:
//!
//! - **TTL.** A station silent for `--station-ttl` of event time is forgotten.
//! - **Cap.** At most `cap` stations are held. A new station is admitted while there is
//!   room. When there is none, it may take the place of a *probationary* station that has
//!   been idle for [`IDLE_MS`]: one seen in fewer than [`ESTABLISHED_MINUTES`] distinct
//!   minutes, or over less than [`ESTABLISHED_SPAN_MS`]. Otherwise it is refused (the
//!   pane builder dead-letters its readings as `station_limit`).
//!
//! So a burst of one-off ids fills only the free room, never displaces a station with
//! history, and its ids make way for real stations ten minutes after the burst ends. The
//! idle rule also guarantees a displaced station has no window still open (a pane lives
//! six minutes). What a cap refuses depends on arrival order and on how stations hash to
//! workers; below the cap nothing is refused, and the output does not depend on `-w`.

use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::hash::Hash;

use rustc_hash::FxHashMap;

use crate::schema::MINUTE_MS;

/// How long a probationary station must be silent before a new one may take its place:
/// longer than a pane lives in windows (six minutes), so it has no open window left.
pub const IDLE_MS: u64 = 10 * MINUTE_MS;
/// Distinct active minutes after which a station is established (never displaced).
pub const ESTABLISHED_MINUTES: u32 = 3;
/// ... provided those minutes span at least this long.
pub const ESTABLISHED_SPAN_MS: u64 = 30 * MINUTE_MS;
/// Least event time between two TTL sweeps: each sweep looks at every station once.
const SWEEP_MS: u64 = 10 * MINUTE_MS;

#[derive(Clone, Copy, Debug)]
struct Tenant {
    first: u64,
    last: u64,
    minutes: u32,
}

impl Tenant {
    fn established(&self) -> bool {
        self.minutes >= ESTABLISHED_MINUTES && self.last - self.first >= ESTABLISHED_SPAN_MS
    }
}

/// What [`Tenancy::visit`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission<K> {
    /// Already held.
    Held,
    /// Newly admitted, in place of `displaced` when the cap was reached.
    Admitted {
        /// The idle probationary station it replaced.
        displaced: Option<K>,
    },
    /// Refused: the cap is reached and no station may be displaced.
    Refused,
}

/// The stations one structure of one worker holds.
#[derive(Debug)]
pub struct Tenancy<K> {
    cap: usize,
    ttl_ms: u64,
    tenants: FxHashMap<K, Tenant>,
    /// Probationary stations by last activity, oldest first: the displacement candidates.
    probation: BTreeSet<(u64, K)>,
    next_sweep: u64,
}

impl<K: Clone + Eq + Hash + Ord> Tenancy<K> {
    /// Holds at most `cap` stations (at least one), each until silent for `ttl_ms`.
    pub fn new(cap: usize, ttl_ms: u64) -> Tenancy<K> {
        Tenancy {
            cap: cap.max(1),
            ttl_ms,
            tenants: FxHashMap::default(),
            probation: BTreeSet::new(),
            next_sweep: 0,
        }
    }

    /// Stations held.
    pub fn len(&self) -> usize {
        self.tenants.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }

    /// Whether `key` is held.
    pub fn contains(&self, key: &K) -> bool {
        self.tenants.contains_key(key)
    }

    /// Notes that `key` was active at `at` (ms; callers visit in non-decreasing `at` per
    /// station), admitting it when new. A held, established station costs one lookup and
    /// no allocation (the predictor visits once per window).
    pub fn visit<Q>(&mut self, key: &Q, at: u64) -> Admission<K>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(t) = self.tenants.get_mut(key) {
            if at > t.last {
                let was_probation = !t.established();
                t.minutes = t.minutes.saturating_add(1);
                let old = std::mem::replace(&mut t.last, at);
                if was_probation {
                    let owned = key.to_owned();
                    let established = t.established();
                    self.probation.remove(&(old, owned.clone()));
                    if !established {
                        self.probation.insert((at, owned));
                    }
                }
            }
            return Admission::Held;
        }
        let key = key.to_owned();
        let key = &key;
        let mut displaced = None;
        if self.tenants.len() >= self.cap {
            match self.probation.first() {
                Some((last, victim)) if last + IDLE_MS <= at => {
                    let victim = victim.clone();
                    self.remove(&victim);
                    displaced = Some(victim);
                }
                _ => return Admission::Refused,
            }
        }
        self.tenants.insert(
            key.clone(),
            Tenant {
                first: at,
                last: at,
                minutes: 1,
            },
        );
        self.probation.insert((at, key.clone()));
        Admission::Admitted { displaced }
    }

    /// Forgets `key`.
    pub fn remove(&mut self, key: &K) {
        if let Some(t) = self.tenants.remove(key) {
            self.probation.remove(&(t.last, key.clone()));
        }
    }

    /// Whether a station last active at `last` has been silent for the TTL at `now`.
    pub fn expired(&self, last: u64, now: u64) -> bool {
        now.saturating_sub(last) >= self.ttl_ms
    }

    /// The stations silent for the TTL at `now`, removed. Looks at every station, so it
    /// does so at most once per ten minutes of event time; in between it returns nothing.
    pub fn expire(&mut self, now: u64) -> Vec<K> {
        if now < self.next_sweep {
            return Vec::new();
        }
        self.next_sweep = now + SWEEP_MS;
        let ttl = self.ttl_ms;
        let gone: Vec<K> = self
            .tenants
            .iter()
            .filter(|(_, t)| now.saturating_sub(t.last) >= ttl)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &gone {
            self.remove(k);
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: u64 = MINUTE_MS;

    #[test]
    fn below_the_cap_everyone_is_admitted_and_ttl_forgets_the_silent() {
        let mut t: Tenancy<u32> = Tenancy::new(10, 60 * M);
        for k in 0..5 {
            assert_eq!(t.visit(&k, 0), Admission::Admitted { displaced: None });
        }
        assert_eq!(t.visit(&0, M), Admission::Held);
        assert_eq!(t.len(), 5);
        // Station 0 was active at 1 min, the others at 0: at 60 min only those expire.
        let mut gone = t.expire(60 * M);
        gone.sort_unstable();
        assert_eq!(gone, vec![1, 2, 3, 4]);
        assert!(t.expire(61 * M).is_empty(), "no second sweep within ten minutes");
        assert_eq!(t.expire(71 * M), vec![0]);
        assert!(t.is_empty());
    }

    #[test]
    fn a_burst_fills_only_the_room_and_never_displaces_an_established_station() {
        let mut t: Tenancy<u32> = Tenancy::new(4, 26 * 60 * M);
        // Two real stations report every minute for an hour: established.
        for minute in 0..60 {
            t.visit(&1, minute * M);
            t.visit(&2, minute * M);
        }
        // A burst of one-off ids at minute 60: two fit, the rest are refused, even though
        // ids 1 and 2 are not active at that very minute.
        let admitted = (100..200)
            .filter(|k| matches!(t.visit(k, 60 * M), Admission::Admitted { .. }))
            .count();
        assert_eq!(admitted, 2);
        assert!(t.contains(&1) && t.contains(&2));
        // A real newcomer during the burst is refused: the burst ids are not idle yet.
        assert_eq!(t.visit(&3, 65 * M), Admission::Refused);
        // Ten minutes after the burst it displaces the longest idle one-off id.
        assert_eq!(t.visit(&3, 70 * M), Admission::Admitted { displaced: Some(100) });
        assert_eq!(t.visit(&4, 70 * M), Admission::Admitted { displaced: Some(101) });
        assert_eq!(
            t.visit(&5, 70 * M),
            Admission::Refused,
            "only established stations left"
        );
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn a_station_needs_both_minutes_and_span_to_be_established() {
        let mut t: Tenancy<u32> = Tenancy::new(1, 26 * 60 * M);
        // Many readings within five minutes: still probationary.
        for minute in 0..5 {
            t.visit(&1, minute * M);
        }
        assert_eq!(t.visit(&2, 20 * M), Admission::Admitted { displaced: Some(1) });
        // Three minutes spread over half an hour: established.
        for minute in [20, 35, 50] {
            t.visit(&2, minute * M);
        }
        assert_eq!(t.visit(&3, 200 * M), Admission::Refused);
    }
}
