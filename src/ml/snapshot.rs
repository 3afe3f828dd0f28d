//! One station's ML state as it is checkpointed, and the states a run restores.
//!
//! The dataflow's predictor writes each station's [`Saved`] state to the state topic
//! (docs/design.md §5.6), keyed by station id, whenever it changed since the last
//! snapshot. A record is versioned: `WFS` + one version byte + the postcard encoding.
//! Postcard writes every float as its raw bits (NaN included, which the history uses for
//! "no value"), so a restored station continues bit for bit where it stopped; JSON could
//! not promise that.
//!
//! A record this version cannot read (an older layout, another program's bytes, a torn
//! value) is discarded: that station starts from the prior, and the run says so once in
//! its restore summary. It never stops a run.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::station::StationState;

/// The layout version of [`Saved`]. Bump it whenever the serialised form of
/// [`StationState`] (or anything inside it) changes; records of other versions are then
/// discarded on restore, with one log line.
pub const STATE_VERSION: u8 = 1;

const MAGIC: &[u8; 3] = b"WFS";

/// A station's predictor state at a snapshot.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Saved {
    /// End (ms) of the last window the state has taken in. A restarted run re-emits
    /// windows from its resume point, which can be earlier; the predictor skips those up
    /// to here, whose predictions the broker already has.
    pub last_end: u64,
    /// History, learner and detectors.
    pub state: StationState,
}

/// Why a state record was not restored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateDecodeError {
    /// Not written by weatherflow.
    #[error("not a weatherflow state record")]
    Foreign,
    /// Written with another layout.
    #[error("state version {found}, this build reads version {STATE_VERSION}")]
    Version {
        /// The record's version byte.
        found: u8,
    },
    /// The version matches but the bytes do not decode.
    #[error("corrupt state record: {0}")]
    Corrupt(String),
}

/// A serialisation error: cannot happen for these types (every sequence has a known
/// length, every key is a string), reported rather than assumed.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode station state: {0}")]
pub struct StateEncodeError(#[from] postcard::Error);

/// The record value of `saved`.
pub fn encode(saved: &Saved) -> Result<Vec<u8>, StateEncodeError> {
    encode_parts(saved.last_end, &saved.state)
}

/// [`encode`] without building a [`Saved`]: the predictor encodes its live state in place.
pub fn encode_parts(last_end: u64, state: &StationState) -> Result<Vec<u8>, StateEncodeError> {
    /// Serialises exactly like [`Saved`] (serde sees through the reference).
    #[derive(Serialize)]
    struct SavedRef<'a> {
        last_end: u64,
        state: &'a StationState,
    }
    let mut out = Vec::with_capacity(2048);
    out.extend_from_slice(MAGIC);
    out.push(STATE_VERSION);
    Ok(postcard::to_extend(&SavedRef { last_end, state }, out)?)
}

/// Reads a record value written by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<Saved, StateDecodeError> {
    let rest = bytes.strip_prefix(MAGIC.as_slice()).ok_or(StateDecodeError::Foreign)?;
    let (&version, body) = rest.split_first().ok_or(StateDecodeError::Foreign)?;
    if version != STATE_VERSION {
        return Err(StateDecodeError::Version { found: version });
    }
    let (saved, trailing) =
        postcard::take_from_bytes::<Saved>(body).map_err(|e| StateDecodeError::Corrupt(e.to_string()))?;
    if !trailing.is_empty() {
        return Err(StateDecodeError::Corrupt(format!(
            "{} bytes after the state",
            trailing.len()
        )));
    }
    Ok(saved)
}

/// What a restore found, for its one summary line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    /// Records read (every version of every key).
    pub records: u64,
    /// Stations restored.
    pub stations: usize,
    /// Stations whose latest record was a tombstone (forgotten on purpose).
    pub forgotten: usize,
    /// Stations discarded because their record was written with another layout.
    pub other_version: usize,
    /// Stations discarded because their record was not readable.
    pub unreadable: usize,
    /// The first discarded station and why, to name in the log.
    pub first_discarded: Option<(String, String)>,
}

/// The restored states of a process, taken by whichever worker sees the station first.
///
/// Stations are routed by the windows' exchange, which depends on `-w` and `-n`; the
/// states therefore wait here, keyed by id, and each predictor takes its station's state
/// when the station's first window arrives. So a run restores with any worker count.
#[derive(Debug, Default)]
pub struct Restored {
    states: Mutex<HashMap<String, Saved>>,
}

impl Restored {
    /// Builds the restored set from the latest value per key (`None`: a tombstone).
    pub fn from_latest(latest: HashMap<String, Option<Vec<u8>>>, records: u64) -> (Restored, RestoreSummary) {
        let mut summary = RestoreSummary {
            records,
            ..RestoreSummary::default()
        };
        let mut states = HashMap::with_capacity(latest.len());
        for (station, value) in latest {
            let Some(value) = value else {
                summary.forgotten += 1;
                continue;
            };
            match decode(&value) {
                Ok(saved) => {
                    states.insert(station, saved);
                }
                Err(e) => {
                    match e {
                        StateDecodeError::Version { .. } => summary.other_version += 1,
                        _ => summary.unreadable += 1,
                    }
                    if summary.first_discarded.is_none() {
                        summary.first_discarded = Some((station, e.to_string()));
                    }
                }
            }
        }
        summary.stations = states.len();
        (
            Restored {
                states: Mutex::new(states),
            },
            summary,
        )
    }

    /// Takes `station`'s state, if one was restored and no worker took it yet.
    pub fn take(&self, station: &str) -> Option<Saved> {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if states.is_empty() {
            return None;
        }
        states.remove(station)
    }

    /// States not taken yet.
    pub fn len(&self) -> usize {
        self.states.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether every state was taken (or none restored).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ml::features::Location;
    use crate::ml::history::Obs;

    fn models() -> crate::ml::station::Models {
        crate::ml::registry::load_latest(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models"))
            .expect("committed models load")
    }

    /// A station that has seen `minutes` windows, some without humidity (NaN in the
    /// history), so the round trip covers every kind of value.
    fn station_after(models: &crate::ml::station::Models, minutes: u64) -> StationState {
        let mut state = StationState::new(models);
        for m in 0..minutes {
            let humidity = if m % 7 == 0 { f32::NAN } else { 60.0 + (m % 13) as f32 };
            let obs = Obs {
                ts_ms: 1_767_225_600_000 + m * 60_000,
                values: [12.0 + (m as f32 / 97.0).sin() * 5.0, humidity, 1011.0, 2.5],
            };
            state.step(obs, Location::default(), models);
        }
        state
    }

    #[test]
    fn a_restored_station_continues_bit_for_bit() {
        let models = models();
        let minutes = 26 * 60;
        let mut live = station_after(&models, minutes);
        let bytes = encode(&Saved {
            last_end: 7,
            state: live.clone(),
        })
        .expect("encodes");
        eprintln!("encoded state: {} B", bytes.len());
        let back = decode(&bytes).expect("decodes");
        assert_eq!(back.last_end, 7);
        let mut restored = back.state;
        // The next three hours of steps give identical output, bit for bit.
        for m in minutes..minutes + 180 {
            let obs = Obs {
                ts_ms: 1_767_225_600_000 + m * 60_000,
                values: [9.0 + (m % 11) as f32 * 0.3, 70.0, 1009.0, 3.0],
            };
            let a = live.step(obs, Location::default(), &models);
            let b = restored.step(obs, Location::default(), &models);
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "minute {m}");
        }
        assert_eq!(
            encode(&Saved {
                last_end: 0,
                state: live
            })
            .expect("encodes"),
            encode(&Saved {
                last_end: 0,
                state: restored
            })
            .expect("encodes")
        );
    }

    #[test]
    fn other_versions_and_garbage_are_refused_with_their_reason() {
        let models = models();
        let mut bytes = encode(&Saved {
            last_end: 1,
            state: station_after(&models, 90),
        })
        .expect("encodes");
        assert!(decode(&bytes).is_ok());
        assert_eq!(decode(b"{\"json\": true}").unwrap_err(), StateDecodeError::Foreign);
        assert_eq!(decode(b"WF").unwrap_err(), StateDecodeError::Foreign);
        assert_eq!(decode(b"WFS").unwrap_err(), StateDecodeError::Foreign);
        let mut old = bytes.clone();
        old[3] = STATE_VERSION.wrapping_add(1);
        assert_eq!(
            decode(&old).unwrap_err(),
            StateDecodeError::Version {
                found: STATE_VERSION.wrapping_add(1)
            }
        );
        let torn = &bytes[..bytes.len() / 2];
        assert!(matches!(decode(torn).unwrap_err(), StateDecodeError::Corrupt(_)));
        bytes.push(0);
        assert!(matches!(decode(&bytes).unwrap_err(), StateDecodeError::Corrupt(_)));
    }

    #[test]
    fn restore_keeps_the_readable_and_counts_the_rest() {
        let models = models();
        let good = encode(&Saved {
            last_end: 5,
            state: station_after(&models, 3),
        })
        .expect("encodes");
        let mut old = good.clone();
        old[3] = 0;
        let latest = HashMap::from([
            ("a".to_string(), Some(good.clone())),
            ("b".to_string(), Some(old)),
            ("c".to_string(), Some(b"garbage".to_vec())),
            ("d".to_string(), None),
        ]);
        let (restored, summary) = Restored::from_latest(latest, 9);
        assert_eq!(summary.records, 9);
        assert_eq!(summary.stations, 1);
        assert_eq!(summary.other_version, 1);
        assert_eq!(summary.unreadable, 1);
        assert_eq!(summary.forgotten, 1);
        assert!(summary.first_discarded.is_some());
        assert_eq!(restored.take("a").map(|s| s.last_end), Some(5));
        assert!(restored.take("a").is_none(), "taken once");
        assert!(restored.take("b").is_none());
        assert!(restored.is_empty());
    }
}
