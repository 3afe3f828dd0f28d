//! Query strings and path segments, parsed strictly.
//!
//! A bad query is the client's mistake and gets a 400 that says which parameter is wrong
//! and why; nothing here panics or reaches a 5xx. Parameters are parsed by hand rather
//! than through serde so that an unknown or repeated parameter is an error naming it,
//! instead of being silently ignored or reported as a generic deserialisation failure.

use percent_encoding::percent_decode_str;

use crate::schema::{MAX_EPOCH_MS, MAX_STATION_ID_BYTES as MAX_STATION_ID, parse_rfc3339_clamped};

/// A client error: the message becomes `{"error": ...}` with status 400.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

fn bad(message: impl Into<String>) -> BadRequest {
    BadRequest(message.into())
}

/// Decodes one `application/x-www-form-urlencoded` component (`+` is a space).
fn decode_component(raw: &str) -> Result<String, BadRequest> {
    let spaced = raw.replace('+', " ");
    percent_decode_str(&spaced)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| bad("query string is not valid UTF-8 after percent-decoding"))
}

/// Decodes a path segment into a station id: percent-decoded, valid UTF-8, 1–64 bytes.
pub fn station_id(raw: &str) -> Result<String, BadRequest> {
    let id = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| bad("station id is not valid UTF-8 after percent-decoding"))?;
    if id.is_empty() {
        return Err(bad("station id is empty"));
    }
    if id.len() > MAX_STATION_ID {
        return Err(bad(format!(
            "station id is {} bytes long; the limit is {MAX_STATION_ID}",
            id.len()
        )));
    }
    Ok(id.into_owned())
}

/// The parameters of one request, checked against the names a route accepts.
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Parses `raw` (without the `?`), accepting only `allowed` names, each at most once.
    pub fn parse(raw: &str, allowed: &[&str]) -> Result<Params, BadRequest> {
        let mut params: Vec<(String, String)> = Vec::new();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode_component(name)?;
            let value = decode_component(value)?;
            if !allowed.contains(&name.as_str()) {
                return Err(bad(if allowed.is_empty() {
                    format!("unknown query parameter {name:?}: this route takes none")
                } else {
                    format!("unknown query parameter {name:?} (allowed: {})", allowed.join(", "))
                }));
            }
            if params.iter().any(|(n, _)| *n == name) {
                return Err(bad(format!("query parameter {name:?} is given twice")));
            }
            params.push((name, value));
        }
        Ok(Params(params))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// A time: RFC 3339 (before 1970 counts as 1970), or an integer of epoch milliseconds.
    pub fn time(&self, name: &str) -> Result<Option<u64>, BadRequest> {
        let Some(text) = self.get(name) else {
            return Ok(None);
        };
        let text = text.trim();
        let parsed = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            text.parse::<u64>().ok().filter(|ms| *ms <= MAX_EPOCH_MS)
        } else {
            parse_rfc3339_clamped(text)
        };
        parsed.map(Some).ok_or_else(|| {
            bad(format!(
                "{name}={text:?} is neither an RFC 3339 time (2026-11-20T12:00:00Z) nor epoch milliseconds"
            ))
        })
    }

    /// A count in `1..=max`, `default` when absent.
    pub fn limit(&self, name: &str, default: usize, max: usize) -> Result<usize, BadRequest> {
        let Some(text) = self.get(name) else {
            return Ok(default);
        };
        match text.trim().parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(bad(format!("{name}={text:?} must be an integer from 1 to {max}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_accept_rfc3339_and_epoch_ms_only() {
        let p = Params::parse("from=2026-11-20T12:00:00Z&to=1795176060000", &["from", "to"]).unwrap();
        assert_eq!(p.time("from"), Ok(Some(1_795_176_000_000)));
        assert_eq!(p.time("to"), Ok(Some(1_795_176_060_000)));
        assert_eq!(p.time("since"), Ok(None));
        let p = Params::parse("from=2026-11-20T13:00:00%2B01:00", &["from"]).unwrap();
        assert_eq!(p.time("from"), Ok(Some(1_795_176_000_000)));
        for bad in [
            "yesterday",
            "-5",
            "1e9",
            "",
            "99999999999999999999",
            "2026-13-01T00:00:00Z",
        ] {
            let p = Params::parse(&format!("from={bad}"), &["from"]).unwrap();
            assert!(p.time("from").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn limits_unknown_and_repeated_parameters() {
        let p = Params::parse("limit=10", &["limit"]).unwrap();
        assert_eq!(p.limit("limit", 5, 100), Ok(10));
        assert_eq!(Params::default().limit("limit", 5, 100), Ok(5));
        for bad in ["0", "101", "-1", "ten", ""] {
            let p = Params::parse(&format!("limit={bad}"), &["limit"]).unwrap();
            assert!(p.limit("limit", 5, 100).is_err(), "{bad:?}");
        }
        let e = Params::parse("limt=3", &["limit"]).unwrap_err();
        assert!(e.0.contains("limt") && e.0.contains("allowed: limit"), "{e}");
        assert!(Params::parse("limit=1&limit=2", &["limit"]).is_err());
        assert!(Params::parse("x=%FF", &["x"]).is_err());
        assert!(Params::parse("", &[]).is_ok());
    }

    #[test]
    fn station_ids_are_decoded_and_bounded() {
        assert_eq!(station_id("s%20one").unwrap(), "s one");
        assert_eq!(station_id(&"a".repeat(64)).unwrap().len(), 64);
        assert!(station_id(&"a".repeat(65)).is_err());
        assert!(station_id("").is_err());
        assert!(station_id("%C3%28").is_err());
    }
}
