//! The station catalogue (`stations.toml`): the real stations the Open-Meteo producer
//! polls, with their coordinates.
//!
//! A mistake in the catalogue should be fixable from the error alone, so every problem —
//! TOML syntax, a missing or mistyped field, a coordinate out of range, an id that could
//! not be a Kafka key, a duplicate — names the file and the line of the entry.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::schema::MAX_STATION_ID_BYTES;

/// Why the catalogue cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    /// The file could not be read.
    #[error("cannot read station catalogue {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid catalogue.
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending entry or value.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// One station.
#[derive(Clone, Debug, PartialEq)]
pub struct Station {
    /// The id: the Kafka key and `station_id` of its readings.
    pub id: String,
    /// A human name, e.g. "Berlin Tegel, Germany".
    pub name: String,
    /// WGS84 latitude, degrees north.
    pub latitude: f64,
    /// WGS84 longitude, degrees east.
    pub longitude: f64,
    /// Metres above sea level.
    pub elevation: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStation {
    id: Spanned<String>,
    name: Spanned<String>,
    latitude: Spanned<f64>,
    longitude: Spanned<f64>,
    elevation: Spanned<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalogue {
    #[serde(default)]
    station: Vec<Spanned<RawStation>>,
}

fn line_of(text: &str, span: &Range<usize>) -> usize {
    text[..span.start.min(text.len())].matches('\n').count() + 1
}

/// Parses a catalogue's text; `path` only names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<Vec<Station>, CatalogueError> {
    let invalid = |span: &Range<usize>, message: String| CatalogueError::Invalid {
        path: path.to_owned(),
        line: line_of(text, span),
        message,
    };
    let raw: RawCatalogue = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        invalid(&span, e.message().to_owned())
    })?;
    if raw.station.is_empty() {
        return Err(invalid(
            &(0..0),
            "no stations: add [[station]] entries with id, name, latitude, longitude and elevation".into(),
        ));
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut stations = Vec::with_capacity(raw.station.len());
    for entry in raw.station {
        let s = entry.get_ref();
        let id = s.id.get_ref();
        if id.is_empty()
            || id.len() > MAX_STATION_ID_BYTES
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(invalid(
                &s.id.span(),
                format!("station id {id:?} must be 1–{MAX_STATION_ID_BYTES} ASCII letters, digits, '-', '_' or '.'"),
            ));
        }
        if let Some(first) = seen.insert(id.clone(), line_of(text, &s.id.span())) {
            return Err(invalid(
                &s.id.span(),
                format!("station id {id:?} is already used on line {first}"),
            ));
        }
        if s.name.get_ref().trim().is_empty() {
            return Err(invalid(&s.name.span(), format!("station {id:?} has an empty name")));
        }
        let checks = [
            (&s.latitude, -90.0..=90.0, "latitude", "degrees north, -90 to 90"),
            (&s.longitude, -180.0..=180.0, "longitude", "degrees east, -180 to 180"),
            (&s.elevation, -500.0..=9000.0, "elevation", "metres, -500 to 9000"),
        ];
        for (value, range, field, unit) in checks {
            if !range.contains(value.get_ref()) {
                return Err(invalid(
                    &value.span(),
                    format!("station {id:?}: {field} {} is out of range ({unit})", value.get_ref()),
                ));
            }
        }
        let s = entry.into_inner();
        stations.push(Station {
            id: s.id.into_inner(),
            name: s.name.into_inner(),
            latitude: s.latitude.into_inner(),
            longitude: s.longitude.into_inner(),
            elevation: s.elevation.into_inner(),
        });
    }
    Ok(stations)
}

/// Reads and validates a catalogue file.
pub fn load(path: &Path) -> Result<Vec<Station>, CatalogueError> {
    let text = std::fs::read_to_string(path).map_err(|source| CatalogueError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Vec<Station>, String> {
        parse(text, Path::new("s.toml")).map_err(|e| e.to_string())
    }

    const GOOD: &str = r#"
# a comment
[[station]]
id = "berlin"
name = "Berlin Tegel, Germany"
latitude = 52.5644
longitude = 13.3088
elevation = 37.0

[[station]]
id = "quito"
name = "Quito, Ecuador"
latitude = -0.1292
longitude = -78.3575
elevation = 2400
"#;

    #[test]
    fn parses_a_valid_catalogue() {
        let s = check(GOOD).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].id, "quito");
        assert_eq!(s[1].elevation, 2400.0);
    }

    #[test]
    fn the_committed_catalogue_holds_twenty_real_stations() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("stations.toml");
        let stations = load(&path).unwrap();
        assert_eq!(stations.len(), 20);
        // Spread over both hemispheres and all longitudes.
        assert!(stations.iter().any(|s| s.latitude < -30.0) && stations.iter().any(|s| s.latitude > 60.0));
        assert!(stations.iter().any(|s| s.longitude < -100.0) && stations.iter().any(|s| s.longitude > 100.0));
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            (GOOD.replace("52.5644", "95.0"), "s.toml:6:", "latitude 95"),
            (GOOD.replace("-78.3575", "-181"), "s.toml:14:", "longitude"),
            (
                GOOD.replace("\"quito\"", "\"berlin\""),
                "s.toml:11:",
                "already used on line 4",
            ),
            (
                GOOD.replace("\"quito\"", "\"no spaces\""),
                "s.toml:11:",
                "ASCII letters",
            ),
            (GOOD.replace("elevation = 2400", ""), "s.toml:10:", "elevation"),
            (
                GOOD.replace("elevation = 2400", "elevation = \"high\""),
                "s.toml:15:",
                "expected f64",
            ),
            (
                GOOD.replace("elevation = 2400", "elevation = 2400\ncolour = 1"),
                "s.toml:16:",
                "colour",
            ),
            (
                GOOD.replace("[[station]]\nid = \"quito\"", "[[station]\nid = \"quito\""),
                "s.toml:10:",
                "",
            ),
            ("# nothing\n".to_owned(), "s.toml:1:", "no stations"),
        ];
        for (text, location, needle) in cases {
            let e = check(&text).unwrap_err();
            assert!(e.starts_with(location) && e.contains(needle), "{e}");
        }
    }
}
