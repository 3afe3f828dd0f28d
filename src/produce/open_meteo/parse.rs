//! Open-Meteo forecast responses with a `current` block, parsed strictly.
//!
//! The shape, as the API returns it for
//! `current=temperature_2m,relative_humidity_2m,surface_pressure,wind_speed_10m,wind_direction_10m,precipitation&timeformat=unixtime&wind_speed_unit=ms`:
//! an object for one location, an array of objects for several. Each object has
//! `current.time` in epoch seconds and the six variables, any of which may be `null`
//! (missing). The first object of an array has no `location_id`; the others carry their
//! position in the request. Anything else is an error: a response that does not match the
//! request must not be half-published.

use serde::Deserialize;

/// One location's current conditions, in the units the request asks for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Current {
    /// Observation time, epoch seconds (the start of the 15-minute interval it describes).
    pub time_s: i64,
    /// °C.
    pub temperature: Option<f64>,
    /// % RH.
    pub humidity: Option<f64>,
    /// Surface pressure, hPa.
    pub pressure: Option<f64>,
    /// m/s (the request sets `wind_speed_unit=ms`).
    pub wind_speed: Option<f64>,
    /// Degrees.
    pub wind_direction: Option<f64>,
    /// mm over the interval.
    pub precipitation: Option<f64>,
}

/// Why a response body is unusable.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON of the expected shape (e.g. truncated, or no `current` block).
    #[error("malformed response: {0}")]
    Malformed(String),
    /// A different number of locations than requested.
    #[error("the response has {got} locations for {expected} requested")]
    Count {
        /// Locations requested.
        expected: usize,
        /// Locations returned.
        got: usize,
    },
    /// `location_id`s that do not name each requested location once.
    #[error("location_id {0} does not match the request")]
    LocationId(i64),
}

#[derive(Deserialize)]
struct RawCurrent {
    time: i64,
    temperature_2m: Option<f64>,
    relative_humidity_2m: Option<f64>,
    surface_pressure: Option<f64>,
    wind_speed_10m: Option<f64>,
    wind_direction_10m: Option<f64>,
    precipitation: Option<f64>,
}

#[derive(Deserialize)]
struct RawLocation {
    location_id: Option<i64>,
    current: RawCurrent,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawResponse {
    Many(Vec<RawLocation>),
    One(RawLocation),
}

/// The error body Open-Meteo sends with a 4xx: `{"error": true, "reason": "..."}`.
#[derive(Deserialize)]
struct RawError {
    reason: String,
}

/// The `reason` of an Open-Meteo error body, if the body is one.
pub fn error_reason(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<RawError>(body).ok().map(|e| e.reason)
}

/// Parses a response to a request for `expected` locations, in request order.
pub fn parse(body: &[u8], expected: usize) -> Result<Vec<Current>, ParseError> {
    let raw: RawResponse = serde_json::from_slice(body).map_err(|e| ParseError::Malformed(e.to_string()))?;
    let locations = match raw {
        RawResponse::One(one) => vec![one],
        RawResponse::Many(many) => many,
    };
    if locations.len() != expected {
        return Err(ParseError::Count {
            expected,
            got: locations.len(),
        });
    }
    let mut out: Vec<Option<Current>> = vec![None; expected];
    for (position, location) in locations.into_iter().enumerate() {
        // The first location carries no id; the others carry their request position.
        let index = match location.location_id {
            None if position == 0 => 0,
            None => return Err(ParseError::Malformed(format!("location {position} has no location_id"))),
            Some(id) => usize::try_from(id)
                .ok()
                .filter(|&i| i < expected)
                .ok_or(ParseError::LocationId(id))?,
        };
        let slot = &mut out[index];
        if slot.is_some() {
            return Err(ParseError::LocationId(index as i64));
        }
        let c = location.current;
        *slot = Some(Current {
            time_s: c.time,
            temperature: c.temperature_2m,
            humidity: c.relative_humidity_2m,
            pressure: c.surface_pressure,
            wind_speed: c.wind_speed_10m,
            wind_direction: c.wind_direction_10m,
            precipitation: c.precipitation,
        });
    }
    // Every slot is filled: `expected` distinct indices below `expected` were assigned.
    Ok(out.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = r#"{"latitude":52.52,"longitude":13.419998,"generationtime_ms":0.05,"utc_offset_seconds":0,
        "timezone":"GMT","timezone_abbreviation":"GMT","elevation":38.0,
        "current_units":{"time":"unixtime","interval":"seconds","temperature_2m":"°C"},
        "current_interval":900,
        "current":{"time":1795176000,"interval":900,"temperature_2m":11.9,"relative_humidity_2m":81,
        "surface_pressure":1006.0,"wind_speed_10m":2.1,"wind_direction_10m":250,"precipitation":0.0}}"#;

    #[test]
    fn one_location_is_an_object() {
        let c = parse(ONE.as_bytes(), 1).unwrap();
        assert_eq!(c[0].time_s, 1_795_176_000);
        assert_eq!(c[0].temperature, Some(11.9));
        assert_eq!(c[0].humidity, Some(81.0));
        assert_eq!(parse(ONE.as_bytes(), 2), Err(ParseError::Count { expected: 2, got: 1 }));
    }

    #[test]
    fn several_locations_are_matched_by_location_id_and_nulls_are_missing() {
        let body = r#"[
          {"latitude":1,"longitude":1,"current":{"time":10,"temperature_2m":1.0,"relative_humidity_2m":null,
            "surface_pressure":null,"wind_speed_10m":null,"wind_direction_10m":null,"precipitation":null}},
          {"location_id":2,"current":{"time":10,"temperature_2m":3.0,"relative_humidity_2m":3,
            "surface_pressure":1000,"wind_speed_10m":3,"wind_direction_10m":3,"precipitation":0}},
          {"location_id":1,"current":{"time":10,"temperature_2m":2.0,"relative_humidity_2m":2,
            "surface_pressure":1000,"wind_speed_10m":2,"wind_direction_10m":2,"precipitation":0}}]"#;
        let c = parse(body.as_bytes(), 3).unwrap();
        let temps: Vec<Option<f64>> = c.iter().map(|c| c.temperature).collect();
        assert_eq!(temps, [Some(1.0), Some(2.0), Some(3.0)]);
        assert_eq!(c[0].pressure, None);
        let dup = body.replace(r#""location_id":2"#, r#""location_id":1"#);
        assert_eq!(parse(dup.as_bytes(), 3), Err(ParseError::LocationId(1)));
        let out_of_range = body.replace(r#""location_id":2"#, r#""location_id":7"#);
        assert_eq!(parse(out_of_range.as_bytes(), 3), Err(ParseError::LocationId(7)));
    }

    #[test]
    fn truncated_and_foreign_bodies_are_malformed() {
        assert!(matches!(
            parse(&ONE.as_bytes()[..120], 1),
            Err(ParseError::Malformed(_))
        ));
        assert!(matches!(
            parse(b"{\"error\":true,\"reason\":\"x\"}", 1),
            Err(ParseError::Malformed(_))
        ));
        assert!(matches!(parse(b"<html>", 1), Err(ParseError::Malformed(_))));
        assert_eq!(
            error_reason(br#"{"error":true,"reason":"Latitude must be in range"}"#).as_deref(),
            Some("Latitude must be in range")
        );
    }
}
