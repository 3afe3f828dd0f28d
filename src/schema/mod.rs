//! The message contracts of docs/design.md §3: what a weather-raw reading is, when it is invalid
//! and why, and the shape of a weather-features window.
//!
//! Parsing turns bytes into a [`RawReading`] (borrowed, floating point, unchecked);
//! [`RawReading::validate`] applies the physical rules and produces a [`Reading`], the
//! compact value that travels through the dataflow. Keeping the two apart lets the JSON
//! fast path, the serde fallback, the CSV reader and the generator share one set of rules,
//! so a reading is accepted or rejected for the same reason whichever way it arrived.
//!
//! Values inside the dataflow are fixed-point **milli-units** (`i32`): differential needs
//! `Ord` data and exactly cancelling sums, which floats cannot give (see the crate docs).
//! A thousandth of a degree, percent, hectopascal or metre per second is finer than any
//! station reports; values with more decimals are rounded to it.

mod features;
mod json;
mod prediction;
mod timestamp;

pub use features::{Trend, VariableStats, WindowFeatures};
pub use json::{parse_json, parse_json_reference};
pub use prediction::{AnomalyRecord, ForecastRecord, ModelVersions, Prediction, round3};
pub use timestamp::{
    MAX_EPOCH_MS, MINUTE_MS, floor_minute, format_rfc3339, now_ms, parse_rfc3339, parse_rfc3339_clamped,
};

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

/// A station identifier. Inline up to 24 bytes, so the common case never allocates on the
/// per-reading path.
pub type StationId = CompactString;

/// Messages larger than this are rejected before parsing (docs/design.md §3).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Station identifiers longer than this many bytes are rejected.
pub const MAX_STATION_ID_BYTES: usize = 64;
/// The in-dataflow marker for a variable the reading did not carry.
pub const MISSING: i32 = i32::MIN;

/// The four measured variables, in the order used by every per-variable array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Var {
    /// Air temperature, °C.
    Temperature,
    /// Relative humidity, %.
    Humidity,
    /// Station pressure, hPa.
    Pressure,
    /// Wind speed, m/s.
    WindSpeed,
}

impl Var {
    /// All variables, indexable by `var as usize`.
    pub const ALL: [Var; 4] = [Var::Temperature, Var::Humidity, Var::Pressure, Var::WindSpeed];

    /// The JSON field name.
    pub fn name(self) -> &'static str {
        match self {
            Var::Temperature => "temperature",
            Var::Humidity => "humidity",
            Var::Pressure => "pressure",
            Var::WindSpeed => "wind_speed",
        }
    }

    /// The inclusive physically plausible range (docs/design.md §3).
    pub fn range(self) -> (f64, f64) {
        match self {
            Var::Temperature => (-90.0, 60.0),
            Var::Humidity => (0.0, 100.0),
            Var::Pressure => (300.0, 1100.0),
            Var::WindSpeed => (0.0, 120.0),
        }
    }
}

/// Why a reading was rejected. The `as_str` names are the `reason` label of
/// `weatherflow_records_invalid_total` and the DLQ header, so they are part of the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InvalidReason {
    /// Not JSON, not an object, or truncated.
    MalformedJson,
    /// A CSV row with the wrong number of fields.
    MalformedCsv,
    /// Larger than [`MAX_MESSAGE_BYTES`].
    Oversized,
    /// `station_id`, `timestamp` or `temperature` absent or null.
    MissingField,
    /// A known field holding the wrong JSON type.
    WrongType,
    /// A timestamp that is neither RFC 3339 nor non-negative epoch milliseconds up to year 9999.
    BadTimestamp,
    /// NaN, infinity, or a number too large for `f64`.
    NonFinite,
    /// Outside the physical range of [`Var::range`].
    OutOfRange,
    /// An empty `station_id`.
    EmptyStationId,
    /// A `station_id` longer than [`MAX_STATION_ID_BYTES`].
    StationIdTooLong,
    /// An event time further ahead of the wall clock than `--max-future` allows. Judged
    /// by the sources, not the parser: the verdict depends on when the reading arrives.
    FutureTimestamp,
    /// A `station_id` whose 64-bit key another id already holds. Judged by the pane
    /// builder, which alone sees every id of a key; the first id seen keeps the key.
    StationKeyCollision,
    /// A new station while the worker holds `--max-stations` worth already and none may
    /// make way (docs/design.md §4.11). Judged by the pane builder.
    StationLimit,
}

impl InvalidReason {
    /// Every reason, for exhaustive metrics output.
    pub const ALL: [InvalidReason; 13] = [
        InvalidReason::MalformedJson,
        InvalidReason::MalformedCsv,
        InvalidReason::Oversized,
        InvalidReason::MissingField,
        InvalidReason::WrongType,
        InvalidReason::BadTimestamp,
        InvalidReason::NonFinite,
        InvalidReason::OutOfRange,
        InvalidReason::EmptyStationId,
        InvalidReason::StationIdTooLong,
        InvalidReason::FutureTimestamp,
        InvalidReason::StationKeyCollision,
        InvalidReason::StationLimit,
    ];

    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            InvalidReason::MalformedJson => "malformed_json",
            InvalidReason::MalformedCsv => "malformed_csv",
            InvalidReason::Oversized => "oversized",
            InvalidReason::MissingField => "missing_field",
            InvalidReason::WrongType => "wrong_type",
            InvalidReason::BadTimestamp => "bad_timestamp",
            InvalidReason::NonFinite => "non_finite",
            InvalidReason::OutOfRange => "out_of_range",
            InvalidReason::EmptyStationId => "empty_station_id",
            InvalidReason::StationIdTooLong => "station_id_too_long",
            InvalidReason::FutureTimestamp => "future_timestamp",
            InvalidReason::StationKeyCollision => "station_key_collision",
            InvalidReason::StationLimit => "station_limit",
        }
    }
}

/// A rejected reading: the reason, and the field it concerns when there is one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} ({})", .reason.as_str(), .field.unwrap_or("record"))]
pub struct Invalid {
    /// The named reason.
    pub reason: InvalidReason,
    /// The offending field, if the reason concerns one.
    pub field: Option<&'static str>,
}

impl Invalid {
    /// A rejection concerning `field`.
    pub fn new(reason: InvalidReason, field: &'static str) -> Self {
        Invalid {
            reason,
            field: Some(field),
        }
    }
    pub(crate) fn record(reason: InvalidReason) -> Self {
        Invalid { reason, field: None }
    }
}

/// A validated reading as it travels through the dataflow.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Reading {
    /// The station; the exchange key.
    pub station: StationId,
    /// Event time, epoch milliseconds.
    pub timestamp_ms: u64,
    /// Position in the input (file and byte offset, or generator index). When duplicates
    /// disagree, the one first in the input wins; `seq` makes that choice independent of
    /// which worker saw which copy first.
    pub seq: u64,
    /// Milli-unit values in [`Var::ALL`] order; [`MISSING`] where absent.
    pub values: [i32; 4],
}

/// A parsed but unchecked reading. Parsers fill it; [`RawReading::validate`] judges it.
#[derive(Clone, Debug, PartialEq)]
pub struct RawReading<'a> {
    /// The station identifier as written.
    pub station_id: &'a str,
    /// Event time, epoch milliseconds (parsers reject unusable timestamps themselves).
    pub timestamp_ms: u64,
    /// Values in [`Var::ALL`] order; `None` where absent or null. Temperature is required.
    pub values: [Option<f64>; 4],
}

impl Reading {
    /// The reading as a weather-raw JSON object: for dead letters judged inside the
    /// dataflow, where the original bytes are gone. Values are exact (milli-units).
    pub fn to_json(&self) -> String {
        let mut out = format!(
            "{{\"station_id\":{},\"timestamp\":\"{}\"",
            serde_json::Value::from(self.station.as_str()),
            format_rfc3339(self.timestamp_ms)
        );
        for var in Var::ALL {
            let v = self.values[var as usize];
            if v != MISSING {
                out.push_str(&format!(",\"{}\":{}", var.name(), f64::from(v) / 1000.0));
            }
        }
        out.push('}');
        out
    }
}

impl RawReading<'_> {
    /// Applies the rules of docs/design.md §3 and converts to fixed point.
    pub fn validate(&self, seq: u64) -> Result<Reading, Invalid> {
        if self.station_id.is_empty() {
            return Err(Invalid::new(InvalidReason::EmptyStationId, "station_id"));
        }
        if self.station_id.len() > MAX_STATION_ID_BYTES {
            return Err(Invalid::new(InvalidReason::StationIdTooLong, "station_id"));
        }
        if self.timestamp_ms > MAX_EPOCH_MS {
            return Err(Invalid::new(InvalidReason::BadTimestamp, "timestamp"));
        }
        let mut values = [MISSING; 4];
        for var in Var::ALL {
            match self.values[var as usize] {
                None if var == Var::Temperature => {
                    return Err(Invalid::new(InvalidReason::MissingField, var.name()));
                }
                None => {}
                Some(v) if !v.is_finite() => {
                    return Err(Invalid::new(InvalidReason::NonFinite, var.name()));
                }
                Some(v) => {
                    let (lo, hi) = var.range();
                    if v < lo || v > hi {
                        return Err(Invalid::new(InvalidReason::OutOfRange, var.name()));
                    }
                    // In range, so |v * 1000| <= 1.1e6 and the cast cannot saturate.
                    values[var as usize] = (v * 1000.0).round() as i32;
                }
            }
        }
        Ok(Reading {
            station: StationId::from(self.station_id),
            timestamp_ms: self.timestamp_ms,
            seq,
            values,
        })
    }
}
