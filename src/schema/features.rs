//! The weather-features record: one closed 5-minute window of one station (docs/design.md §3).
//!
//! These are plain output values in engineering units (`f64`), built once per emitted
//! window from the exact integer aggregates of the dataflow. Field order and names are
//! the wire contract; window bounds travel as epoch milliseconds in memory and as RFC 3339
//! strings on the wire.

use serde::{Deserialize, Serialize};

/// Statistics of one variable over the readings of a window that carried it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VariableStats {
    /// Readings in the window that carried this variable.
    pub count: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation (n − 1); `null` when `count < 2`.
    pub std: Option<f64>,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Least-squares slope of value against time, per hour; `null` when `count < 2` or
    /// all readings share one timestamp.
    pub slope_per_hour: Option<f64>,
}

/// Change of each variable's window mean against the same station's window that ended
/// one minute earlier; `null` when that window or the variable is missing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Trend {
    /// Temperature mean change, °C.
    pub temperature_change_1m: Option<f64>,
    /// Humidity mean change, % RH.
    pub humidity_change_1m: Option<f64>,
    /// Pressure mean change, hPa.
    pub pressure_change_1m: Option<f64>,
    /// Wind speed mean change, m/s.
    pub wind_speed_change_1m: Option<f64>,
}

/// One emitted window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WindowFeatures {
    /// The station.
    pub station_id: String,
    /// Inclusive window start, epoch ms (RFC 3339 on the wire).
    #[serde(with = "rfc3339_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub window_start: u64,
    /// Exclusive window end, epoch ms (RFC 3339 on the wire).
    #[serde(with = "rfc3339_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub window_end: u64,
    /// Readings in the window.
    pub count: u64,
    /// Temperature statistics.
    pub temperature: Option<VariableStats>,
    /// Humidity statistics; `null` when no reading carried humidity.
    pub humidity: Option<VariableStats>,
    /// Pressure statistics; `null` when no reading carried pressure.
    pub pressure: Option<VariableStats>,
    /// Wind speed statistics; `null` when no reading carried wind speed.
    pub wind_speed: Option<VariableStats>,
    /// One-minute mean changes.
    pub trend: Trend,
}

impl WindowFeatures {
    /// Appends the wire JSON, byte-identical to `serde_json::to_writer(self)`, given the
    /// window bounds already formatted. A sink writes every station of a window end in
    /// one go, so it formats those two timestamps once per minute instead of per record.
    pub fn write_json(&self, out: &mut Vec<u8>, window_start: &str, window_end: &str) -> serde_json::Result<()> {
        use std::io::Write as _;
        out.extend_from_slice(br#"{"station_id":"#);
        serde_json::to_writer(&mut *out, &self.station_id)?;
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            r#","window_start":"{window_start}","window_end":"{window_end}","count":{}"#,
            self.count
        );
        for (name, stats) in [
            (&br#","temperature":"#[..], &self.temperature),
            (br#","humidity":"#, &self.humidity),
            (br#","pressure":"#, &self.pressure),
            (br#","wind_speed":"#, &self.wind_speed),
        ] {
            out.extend_from_slice(name);
            serde_json::to_writer(&mut *out, stats)?;
        }
        out.extend_from_slice(br#","trend":"#);
        serde_json::to_writer(&mut *out, &self.trend)?;
        out.push(b'}');
        Ok(())
    }
}

pub(crate) mod rfc3339_ms {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(ms: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::super::format_rfc3339(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        super::super::parse_rfc3339(&text).ok_or_else(|| D::Error::custom(format!("not an RFC 3339 time: {text}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::format_rfc3339;

    #[test]
    fn serialises_in_contract_order_and_round_trips() {
        let stats = VariableStats {
            count: 30,
            mean: 11.8,
            std: Some(0.12),
            min: 11.6,
            max: 12.0,
            slope_per_hour: Some(0.9),
        };
        let f = WindowFeatures {
            station_id: "berlin".into(),
            window_start: 1_795_175_760_000,
            window_end: 1_795_176_060_000,
            count: 30,
            temperature: Some(stats),
            humidity: None,
            pressure: None,
            wind_speed: None,
            trend: Trend {
                temperature_change_1m: Some(0.02),
                ..Trend::default()
            },
        };
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(
            json,
            r#"{"station_id":"berlin","window_start":"2026-11-20T11:56:00Z","window_end":"2026-11-20T12:01:00Z","count":30,"temperature":{"count":30,"mean":11.8,"std":0.12,"min":11.6,"max":12.0,"slope_per_hour":0.9},"humidity":null,"pressure":null,"wind_speed":null,"trend":{"temperature_change_1m":0.02,"humidity_change_1m":null,"pressure_change_1m":null,"wind_speed_change_1m":null}}"#
        );
        assert_eq!(serde_json::from_str::<WindowFeatures>(&json).unwrap(), f);
        let mut fast = Vec::new();
        f.write_json(&mut fast, "2026-11-20T11:56:00Z", "2026-11-20T12:01:00Z")
            .unwrap();
        assert_eq!(String::from_utf8(fast).unwrap(), json);
        let odd = WindowFeatures {
            station_id: "quote\"and\\slash ü".into(),
            humidity: f.temperature.clone(),
            ..f
        };
        let mut fast = Vec::new();
        odd.write_json(
            &mut fast,
            &format_rfc3339(odd.window_start),
            &format_rfc3339(odd.window_end),
        )
        .unwrap();
        assert_eq!(fast, serde_json::to_vec(&odd).unwrap());
    }
}
