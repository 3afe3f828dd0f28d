//! The historical CSV layout of `data/historical` and `data/minute`:
//! `station_id,timestamp,temperature_c,humidity_pct,pressure_hpa,wind_speed_ms,…`.
//!
//! Columns are found by header name, in any order, and extra columns are ignored. The JSON
//! field names (`temperature`, `humidity`, …) are accepted as aliases. An empty field is a
//! missing value. Fields are not quoted in these files, and quoting is not supported.

use crate::schema::{Invalid, InvalidReason, RawReading, Reading, Var, parse_rfc3339};

/// Column positions of the fields a reading needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvHeader {
    station: usize,
    timestamp: usize,
    values: [Option<usize>; 4],
    width: usize,
}

impl CsvHeader {
    /// Maps a header line; `Err` names the first required column that is missing.
    pub fn parse(line: &str) -> Result<CsvHeader, &'static str> {
        let names: Vec<&str> = line.split(',').map(str::trim).collect();
        let find = |aliases: &[&str]| names.iter().position(|n| aliases.contains(n));
        let values = [
            find(&["temperature_c", "temperature"]),
            find(&["humidity_pct", "humidity"]),
            find(&["pressure_hpa", "pressure"]),
            find(&["wind_speed_ms", "wind_speed"]),
        ];
        Ok(CsvHeader {
            station: find(&["station_id"]).ok_or("station_id")?,
            timestamp: find(&["timestamp"]).ok_or("timestamp")?,
            values: [Some(values[0].ok_or("temperature_c")?), values[1], values[2], values[3]],
            width: names.len(),
        })
    }

    /// Parses and validates one data row.
    pub fn reading(&self, line: &[u8], seq: u64) -> Result<Reading, Invalid> {
        let line = std::str::from_utf8(line).map_err(|_| Invalid::record(InvalidReason::MalformedCsv))?;
        let mut fields = [""; 64];
        let mut n = 0;
        for field in line.split(',') {
            if n == fields.len() {
                return Err(Invalid::record(InvalidReason::MalformedCsv));
            }
            fields[n] = field;
            n += 1;
        }
        if n != self.width {
            return Err(Invalid::record(InvalidReason::MalformedCsv));
        }
        let timestamp = fields[self.timestamp];
        if timestamp.is_empty() {
            return Err(Invalid::new(InvalidReason::MissingField, "timestamp"));
        }
        let timestamp_ms = match timestamp.bytes().all(|b| b.is_ascii_digit()) {
            true => timestamp.parse().ok(),
            false => parse_rfc3339(timestamp),
        }
        .ok_or(Invalid::new(InvalidReason::BadTimestamp, "timestamp"))?;
        let mut values = [None; 4];
        for var in Var::ALL {
            let Some(col) = self.values[var as usize] else {
                continue;
            };
            let text = fields[col].trim();
            if text.is_empty() {
                continue;
            }
            let v: f64 = text
                .parse()
                .map_err(|_| Invalid::new(InvalidReason::WrongType, var.name()))?;
            values[var as usize] = Some(v);
        }
        RawReading {
            station_id: fields[self.station],
            timestamp_ms,
            values,
        }
        .validate(seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "station_id,timestamp,temperature_c,humidity_pct,pressure_hpa,wind_speed_ms,segment,latitude,longitude";

    #[test]
    fn reads_the_historical_layout_with_missing_values() {
        let h = CsvHeader::parse(HEADER).unwrap();
        let r = h
            .reading(
                b"sand_point_ak,2021-01-01T10:00:00Z,4.00,93.00,,2.10,1997-01,55.3170,-160.5170",
                3,
            )
            .unwrap();
        assert_eq!(r.station, "sand_point_ak");
        assert_eq!(r.values, [4_000, 93_000, crate::schema::MISSING, 2_100]);
        assert_eq!(r.seq, 3);
    }

    #[test]
    fn reorders_columns_by_name_and_rejects_bad_rows() {
        let h = CsvHeader::parse("timestamp,temperature,station_id").unwrap();
        assert!(h.reading(b"0,1.5,a", 0).is_ok());
        let reason = |line: &[u8]| h.reading(line, 0).unwrap_err().reason;
        assert_eq!(reason(b"0,1.5"), InvalidReason::MalformedCsv);
        assert_eq!(reason(b"0,warm,a"), InvalidReason::WrongType);
        assert_eq!(reason(b"0,NaN,a"), InvalidReason::NonFinite);
        assert_eq!(reason(b"0,,a"), InvalidReason::MissingField);
        assert_eq!(reason(b",1,a"), InvalidReason::MissingField);
        assert_eq!(reason(b"noon,1,a"), InvalidReason::BadTimestamp);
        assert_eq!(reason(b"0,99,a"), InvalidReason::OutOfRange);
        assert_eq!(reason(b"0,1,"), InvalidReason::EmptyStationId);
        assert_eq!(CsvHeader::parse("station_id,temperature_c"), Err("timestamp"));
    }
}
