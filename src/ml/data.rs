//! Hourly station CSVs (`data/historical/*.csv`, `data/labelled/*.csv`) for training and
//! evaluation.
//!
//! Columns are found by header name, so the labelled files (which add `label` and
//! `fault_type` in the middle) and the plain ones share one reader. A missing value is an
//! empty field and becomes NaN, the in-memory "missing" of [`crate::ml`]; a row without a
//! temperature is kept (its other variables still feed the history) but never becomes a
//! forecast target.

use std::path::{Path, PathBuf};

use super::MlError;
use super::features::Location;
use super::history::Obs;
use crate::schema::parse_rfc3339;

/// Fault label of a labelled row: `1` faulty, `0` clean, `-1` not evaluated.
pub type Label = i8;

/// One hourly row.
#[derive(Clone, Debug)]
pub struct Row {
    /// The observation.
    pub obs: Obs,
    /// Segment name (`YYYY-MM` of the source month); no history crosses a change.
    pub segment: String,
    /// Fault label, when the file has one.
    pub label: Option<Label>,
    /// Fault type, when labelled faulty.
    pub fault_type: Option<String>,
}

/// All rows of one station, in time order.
#[derive(Clone, Debug)]
pub struct StationData {
    /// The station id of the file's rows.
    pub station_id: String,
    /// Where the station is (from the `latitude`/`longitude` columns), for solar time
    /// and clear-sky sun.
    pub location: Location,
    /// The rows.
    pub rows: Vec<Row>,
    /// The file it came from.
    pub path: PathBuf,
}

impl StationData {
    /// True when any row carries a label.
    pub fn is_labelled(&self) -> bool {
        self.rows.iter().any(|r| r.label.is_some())
    }
}

/// Expands glob patterns into sorted, de-duplicated paths; a pattern matching nothing is
/// an error, because a typo would otherwise train on less data than intended.
pub fn expand(patterns: &[String]) -> Result<Vec<PathBuf>, MlError> {
    let mut paths = Vec::new();
    for pattern in patterns {
        let matched = glob::glob(pattern).map_err(|e| MlError::Data(format!("bad pattern {pattern:?}: {e}")))?;
        let before = paths.len();
        for entry in matched {
            let path = entry.map_err(|e| MlError::Data(format!("{pattern}: {e}")))?;
            if path.extension().is_some_and(|e| e == "csv") {
                paths.push(path);
            }
        }
        if paths.len() == before {
            return Err(MlError::Data(format!("no CSV file matches {pattern:?}")));
        }
    }
    paths.sort();
    paths.dedup();
    Ok(paths)
}

/// Reads every file; each file holds one station (a file with several ids is split).
pub fn load(patterns: &[String]) -> Result<Vec<StationData>, MlError> {
    let mut stations: Vec<StationData> = Vec::new();
    for path in expand(patterns)? {
        for data in read_file(&path)? {
            match stations.iter_mut().find(|s| s.station_id == data.station_id) {
                Some(existing) => {
                    existing.rows.extend(data.rows);
                    existing.rows.sort_by_key(|r| r.obs.ts_ms);
                }
                None => stations.push(data),
            }
        }
    }
    Ok(stations)
}

struct Columns {
    station: usize,
    timestamp: usize,
    values: [Option<usize>; 4],
    segment: Option<usize>,
    latitude: Option<usize>,
    longitude: Option<usize>,
    label: Option<usize>,
    fault_type: Option<usize>,
}

impl Columns {
    fn from_header(header: &str, path: &Path) -> Result<Columns, MlError> {
        let names: Vec<&str> = header.trim_end().split(',').map(str::trim).collect();
        let find = |name: &str| names.iter().position(|n| *n == name);
        let required = |name: &str| {
            find(name).ok_or_else(|| MlError::Data(format!("{}: header has no {name:?} column", path.display())))
        };
        Ok(Columns {
            station: required("station_id")?,
            timestamp: required("timestamp")?,
            values: [
                Some(required("temperature_c")?),
                find("humidity_pct"),
                find("pressure_hpa"),
                find("wind_speed_ms"),
            ],
            segment: find("segment"),
            latitude: find("latitude"),
            longitude: find("longitude"),
            label: find("label"),
            fault_type: find("fault_type"),
        })
    }
}

/// Reads one CSV file into per-station data.
pub fn read_file(path: &Path) -> Result<Vec<StationData>, MlError> {
    let text = std::fs::read_to_string(path).map_err(|e| MlError::Io(path.to_owned(), e))?;
    let mut lines = text.lines().enumerate();
    let header = lines
        .next()
        .map(|(_, h)| h)
        .ok_or_else(|| MlError::Data(format!("{}: empty file", path.display())))?;
    let cols = Columns::from_header(header, path)?;
    let mut out: Vec<StationData> = Vec::new();
    for (index, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: &str| MlError::Data(format!("{}:{}: {what}", path.display(), index + 1));
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        let field = |i: usize| fields.get(i).copied().unwrap_or("");
        let number = |i: Option<usize>| -> Result<f32, MlError> {
            match i.map(field) {
                None | Some("") => Ok(f32::NAN),
                Some(text) => text
                    .parse::<f32>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| bad(&format!("not a finite number: {text:?}"))),
            }
        };
        let station_id = field(cols.station);
        if station_id.is_empty() {
            return Err(bad("empty station_id"));
        }
        let ts = parse_rfc3339(field(cols.timestamp)).ok_or_else(|| bad("bad timestamp"))?;
        let mut values = [f32::NAN; 4];
        for (v, col) in values.iter_mut().zip(cols.values) {
            *v = number(col)?;
        }
        let label = match cols.label.map(field) {
            None | Some("") => None,
            Some(text) => Some(text.parse::<Label>().map_err(|_| bad("bad label"))?),
        };
        let row = Row {
            obs: Obs { ts_ms: ts, values },
            segment: cols.segment.map(field).unwrap_or("").to_string(),
            label,
            fault_type: cols.fault_type.map(field).filter(|f| !f.is_empty()).map(str::to_string),
        };
        let coordinate = |c: Option<usize>| c.map(field).and_then(|t| t.parse::<f64>().ok());
        let location = Location {
            latitude: coordinate(cols.latitude),
            longitude: coordinate(cols.longitude),
        };
        match out.iter_mut().find(|s| s.station_id == station_id) {
            Some(s) => s.rows.push(row),
            None => out.push(StationData {
                station_id: station_id.to_string(),
                location,
                rows: vec![row],
                path: path.to_owned(),
            }),
        }
    }
    for s in &mut out {
        s.rows.sort_by_key(|r| r.obs.ts_ms);
    }
    Ok(out)
}
