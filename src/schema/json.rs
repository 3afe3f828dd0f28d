//! weather-raw JSON decoding: a strict fast path for the common flat layout, and a serde
//! fallback that is the reference for every verdict.
//!
//! JSON decoding is the largest per-reading cost of the whole job (the dataflow works on
//! per-minute panes, the parser on every line). The fast path accepts only input it can
//! judge with certainty: one flat object of ASCII strings without escapes, plain decimal
//! numbers with at most three fraction digits, and `null`, each known key once. On
//! anything else it gives up and the serde path decides, so both paths always agree: the
//! fast path never rejects, it only accepts what serde would accept with the same values.

use super::timestamp::parse_rfc3339_bytes;
use super::{Invalid, InvalidReason, MAX_MESSAGE_BYTES, RawReading, Reading, Var, parse_rfc3339};

/// Parses and validates one weather-raw message. `seq` is its position in the input.
pub fn parse_json(bytes: &[u8], seq: u64) -> Result<Reading, Invalid> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(Invalid::record(InvalidReason::Oversized));
    }
    match fast(bytes) {
        Some(raw) => raw.validate(seq),
        None => slow(bytes, seq),
    }
}

/// The serde path alone: the reference the fast path must agree with. Public for the
/// differential fuzz tests, which feed both the same bytes.
#[doc(hidden)]
pub fn parse_json_reference(bytes: &[u8], seq: u64) -> Result<Reading, Invalid> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(Invalid::record(InvalidReason::Oversized));
    }
    slow(bytes, seq)
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> Option<()> {
        (self.b.get(self.i) == Some(&c)).then(|| self.i += 1)
    }
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }
    /// A string without escapes, control characters or non-ASCII bytes, as raw bytes.
    fn string(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        loop {
            match *self.b.get(self.i)? {
                b'"' => break,
                b'\\' | 0..=0x1f | 0x80..=0xff => return None,
                _ => self.i += 1,
            }
        }
        let s = &self.b[start..self.i];
        self.i += 1;
        Some(s)
    }
    /// The raw bytes of a number token; validated by the callers.
    fn number(&mut self) -> &'a [u8] {
        let start = self.i;
        while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
        }
        &self.b[start..self.i]
    }
}

/// `-?(0|[1-9][0-9]{0,6})(\.[0-9]{1,3})?` as an `f64`, exactly as `str::parse` would give it.
fn decimal(tok: &[u8]) -> Option<f64> {
    let (neg, digits) = match tok.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, tok),
    };
    let (int, frac) = match digits.iter().position(|&c| c == b'.') {
        Some(p) => (&digits[..p], Some(&digits[p + 1..])),
        None => (digits, None),
    };
    if int.is_empty() || int.len() > 7 || (int.len() > 1 && int[0] == b'0') {
        return None;
    }
    let mut milli: i64 = 0;
    for &c in int {
        if !c.is_ascii_digit() {
            return None;
        }
        milli = milli * 10 + i64::from(c - b'0');
    }
    milli *= 1000;
    if let Some(frac) = frac {
        if frac.is_empty() || frac.len() > 3 {
            return None;
        }
        let mut scale = 100;
        for &c in frac {
            if !c.is_ascii_digit() {
                return None;
            }
            milli += i64::from(c - b'0') * scale;
            scale /= 10;
        }
    }
    // Both operands are exact in f64 and IEEE division rounds correctly, so this equals
    // the correctly rounded decimal that `str::parse::<f64>` returns.
    let v = milli as f64 / 1000.0;
    Some(if neg { -v } else { v })
}

fn integer(tok: &[u8]) -> Option<u64> {
    if tok.is_empty() || tok.len() > 16 || (tok.len() > 1 && tok[0] == b'0') {
        return None;
    }
    tok.iter().try_fold(0u64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + u64::from(c - b'0'))
    })
}

/// Whether `tok` is a JSON number: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
fn json_number(tok: &[u8]) -> bool {
    let mut i = usize::from(tok.first() == Some(&b'-'));
    let run = |i: usize| {
        tok[i.min(tok.len())..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count()
    };
    let int = run(i);
    if int == 0 || (int > 1 && tok[i] == b'0') {
        return false;
    }
    i += int;
    if tok.get(i) == Some(&b'.') {
        let frac = run(i + 1);
        if frac == 0 {
            return false;
        }
        i += 1 + frac;
    }
    if let Some(b'e' | b'E') = tok.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = tok.get(i) {
            i += 1;
        }
        let exp = run(i);
        if exp == 0 {
            return false;
        }
        i += exp;
    }
    i == tok.len()
}

fn fast(bytes: &[u8]) -> Option<RawReading<'_>> {
    let mut c = Cursor { b: bytes, i: 0 };
    let mut station = None;
    let mut timestamp = None;
    let mut values = [None; 4];
    let mut seen = 0u8;
    c.ws();
    c.eat(b'{')?;
    c.ws();
    loop {
        let key = c.string()?;
        c.ws();
        c.eat(b':')?;
        c.ws();
        let slot = match key {
            b"station_id" => 0,
            b"timestamp" => 1,
            b"temperature" => 2,
            b"humidity" => 3,
            b"pressure" => 4,
            b"wind_speed" => 5,
            _ => 6,
        };
        if slot < 6 {
            if seen & (1 << slot) != 0 {
                return None;
            }
            seen |= 1 << slot;
        }
        match (slot, c.peek()?) {
            (0, b'"') => station = Some(c.string()?),
            (1, b'"') => timestamp = Some(parse_rfc3339_bytes(c.string()?)?),
            (1, b'0'..=b'9') => timestamp = Some(integer(c.number())?),
            (2..=5, b'-' | b'0'..=b'9') => values[slot - 2] = Some(decimal(c.number())?),
            (2..=5, b'n') => {
                c.b.get(c.i..c.i + 4).filter(|w| *w == b"null")?;
                c.i += 4;
            }
            (6, b'"') => {
                c.string()?;
            }
            (6, b'-' | b'0'..=b'9') => {
                // An unknown field's number still has to be one serde can read: a literal
                // too large for a double (`1e999`) makes the whole message `non_finite` on
                // the reference path, so the fast path leaves it to that path.
                let tok = c.number();
                if !json_number(tok) || !std::str::from_utf8(tok).ok()?.parse::<f64>().ok()?.is_finite() {
                    return None;
                }
            }
            (6, b'n') => {
                c.b.get(c.i..c.i + 4).filter(|w| *w == b"null")?;
                c.i += 4;
            }
            _ => return None,
        }
        c.ws();
        if c.eat(b',').is_some() {
            c.ws();
            continue;
        }
        c.eat(b'}')?;
        break;
    }
    c.ws();
    if c.i != bytes.len() {
        return None;
    }
    values[Var::Temperature as usize]?;
    // The station bytes were checked to be ASCII, so this never fails.
    let station_id = std::str::from_utf8(station?).ok()?;
    Some(RawReading {
        station_id,
        timestamp_ms: timestamp?,
        values,
    })
}

/// Whether serde stopped at a `NaN`, `Infinity` or `-Infinity` literal (1-based line and
/// column). Python's `json.dumps` writes these for non-finite floats, so producers send
/// them; they are non-finite values, and the dead-letter reason should say so.
fn non_finite_literal(bytes: &[u8], line: usize, column: usize) -> bool {
    let line_start = if line <= 1 {
        0
    } else {
        match memchr::memchr_iter(b'\n', bytes).nth(line - 2) {
            Some(p) => p + 1,
            None => return false,
        }
    };
    let at = line_start + column.saturating_sub(1);
    // serde reports the first byte it could not use: the literal itself, or the byte
    // after a minus sign.
    [at, at.saturating_sub(1)].iter().any(|&i| {
        let rest = bytes.get(i..).unwrap_or_default();
        [&b"NaN"[..], b"Infinity", b"-Infinity"]
            .iter()
            .any(|lit| rest.starts_with(lit))
    })
}

fn slow(bytes: &[u8], seq: u64) -> Result<Reading, Invalid> {
    use serde_json::Value;
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        // serde_json refuses literals like 1e999 rather than returning infinity; they are
        // non-finite values, not broken JSON.
        if e.to_string().contains("number out of range") || non_finite_literal(bytes, e.line(), e.column()) {
            Invalid::record(InvalidReason::NonFinite)
        } else {
            Invalid::record(InvalidReason::MalformedJson)
        }
    })?;
    let Value::Object(map) = value else {
        return Err(Invalid::record(InvalidReason::MalformedJson));
    };
    let present = |name: &'static str| map.get(name).filter(|v| !v.is_null());
    let station_id = match present("station_id") {
        None => return Err(Invalid::new(InvalidReason::MissingField, "station_id")),
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(Invalid::new(InvalidReason::WrongType, "station_id")),
    };
    let bad_ts = Invalid::new(InvalidReason::BadTimestamp, "timestamp");
    let timestamp_ms = match present("timestamp") {
        None => return Err(Invalid::new(InvalidReason::MissingField, "timestamp")),
        Some(Value::String(s)) => parse_rfc3339(s).ok_or(bad_ts)?,
        Some(Value::Number(n)) => n.as_u64().ok_or(bad_ts)?,
        Some(_) => return Err(Invalid::new(InvalidReason::WrongType, "timestamp")),
    };
    let mut values = [None; 4];
    for var in Var::ALL {
        values[var as usize] = match present(var.name()) {
            None => None,
            Some(Value::Number(n)) => Some(n.as_f64().ok_or(Invalid::new(InvalidReason::NonFinite, var.name()))?),
            Some(_) => return Err(Invalid::new(InvalidReason::WrongType, var.name())),
        };
    }
    RawReading {
        station_id,
        timestamp_ms,
        values,
    }
    .validate(seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::MISSING;

    fn reason(line: &str) -> InvalidReason {
        match parse_json(line.as_bytes(), 0) {
            Err(e) => e.reason,
            Ok(r) => panic!("accepted {line}: {r:?}"),
        }
    }

    #[test]
    fn accepts_the_contract_example_on_the_fast_path() {
        let line = br#"{"station_id":"berlin","timestamp":"2026-11-20T12:00:10Z","temperature":11.9,"humidity":81.0,"pressure":1006.0,"wind_speed":2.1}"#;
        assert!(fast(line).is_some());
        let r = parse_json(line, 7).unwrap();
        assert_eq!(r.station, "berlin");
        assert_eq!(r.timestamp_ms, 1_795_176_010_000);
        assert_eq!(r.seq, 7);
        assert_eq!(r.values, [11_900, 81_000, 1_006_000, 2_100]);
    }

    #[test]
    fn epoch_millis_nulls_absent_fields_and_unknown_fields() {
        let r = parse_json(br#"{"timestamp":1795176010000,"station_id":"a","temperature":-3.25,"humidity":null,"wind_direction":270,"note":"x"}"#, 0).unwrap();
        assert_eq!(r.timestamp_ms, 1_795_176_010_000);
        assert_eq!(r.values, [-3_250, MISSING, MISSING, MISSING]);
        let geo = br#"{"station_id":"a","timestamp":0,"temperature":1,"latitude":52.520008,"longitude":-1.3e1}"#;
        assert!(fast(geo).is_some(), "unknown numeric fields stay on the fast path");
    }

    #[test]
    fn fast_and_slow_paths_agree_on_values() {
        for line in [
            r#"{"station_id":"a","timestamp":"2026-11-20T12:00:10Z","temperature":0.1}"#,
            r#"{"station_id":"a","timestamp":"2026-11-20T12:00:10Z","temperature":-0.005,"pressure":1099.999}"#,
            r#" { "station_id" : "a" , "timestamp" : 5 , "temperature" : 60 } "#,
        ] {
            let fast = fast(line.as_bytes()).expect("fast path takes this").validate(0);
            assert_eq!(fast, slow(line.as_bytes(), 0), "{line}");
        }
    }

    #[test]
    fn inputs_the_fast_path_declines_still_parse() {
        for line in [
            r#"{"station_id":"b\u00e9rlin","timestamp":"2026-11-20T12:00:10Z","temperature":1}"#,
            r#"{"station_id":"a","timestamp":"2026-11-20T12:00:10Z","temperature":1.2345e1}"#,
            r#"{"station_id":"a","timestamp":"2026-11-20T12:00:10Z","temperature":1.23456}"#,
            r#"{"station_id":"a","timestamp":"2026-11-20T12:00:10Z","temperature":1,"meta":{"k":[1,2]},"ok":true}"#,
        ] {
            assert!(fast(line.as_bytes()).is_none(), "{line}");
            assert!(parse_json(line.as_bytes(), 0).is_ok(), "{line}");
        }
        let r = parse_json(
            br#"{"station_id":"a","timestamp":"2026-11-20T12:00:10Z","temperature":1.23456}"#,
            0,
        )
        .unwrap();
        assert_eq!(r.values[0], 1_235);
    }

    #[test]
    fn every_invalid_reason_is_named() {
        let ts = r#""timestamp":"2026-11-20T12:00:10Z""#;
        assert_eq!(reason("not json"), InvalidReason::MalformedJson);
        assert_eq!(reason(r#"{"station_id":"a","#), InvalidReason::MalformedJson);
        assert_eq!(reason("[1,2]"), InvalidReason::MalformedJson);
        assert_eq!(
            reason(&format!(r#"{{"station_id":"a",{ts},"temperature":1,"lat":01}}"#)),
            InvalidReason::MalformedJson
        );
        assert_eq!(
            reason(&format!(r#"{{"station_id":"a",{ts},"temperature":1}} x"#)),
            InvalidReason::MalformedJson
        );
        let big = format!(
            r#"{{"station_id":"a",{ts},"temperature":1,"pad":"{}"}}"#,
            "x".repeat(MAX_MESSAGE_BYTES)
        );
        assert_eq!(reason(&big), InvalidReason::Oversized);
        assert_eq!(
            reason(&format!(r#"{{{ts},"temperature":1}}"#)),
            InvalidReason::MissingField
        );
        assert_eq!(
            reason(&format!(r#"{{"station_id":null,{ts},"temperature":1}}"#)),
            InvalidReason::MissingField
        );
        assert_eq!(
            reason(r#"{"station_id":"a","temperature":1}"#),
            InvalidReason::MissingField
        );
        assert_eq!(
            reason(&format!(r#"{{"station_id":"a",{ts}}}"#)),
            InvalidReason::MissingField
        );
        assert_eq!(
            reason(&format!(r#"{{"station_id":"a",{ts},"temperature":null}}"#)),
            InvalidReason::MissingField
        );
        assert_eq!(
            reason(&format!(r#"{{"station_id":7,{ts},"temperature":1}}"#)),
            InvalidReason::WrongType
        );
        assert_eq!(
            reason(&format!(r#"{{"station_id":"a",{ts},"temperature":"1"}}"#)),
            InvalidReason::WrongType
        );
        assert_eq!(
            reason(&format!(r#"{{"station_id":"a",{ts},"temperature":1,"humidity":true}}"#)),
            InvalidReason::WrongType
        );
        assert_eq!(
            reason(r#"{"station_id":"a","timestamp":[1],"temperature":1}"#),
            InvalidReason::WrongType
        );
        assert_eq!(
            reason(r#"{"station_id":"a","timestamp":"yesterday","temperature":1}"#),
            InvalidReason::BadTimestamp
        );
        assert_eq!(
            reason(r#"{"station_id":"a","timestamp":-5,"temperature":1}"#),
            InvalidReason::BadTimestamp
        );
        assert_eq!(
            reason(r#"{"station_id":"a","timestamp":1.5,"temperature":1}"#),
            InvalidReason::BadTimestamp
        );
        assert_eq!(
            reason(r#"{"station_id":"a","timestamp":99999999999999999,"temperature":1}"#),
            InvalidReason::BadTimestamp
        );
        assert_eq!(
            reason(&format!(r#"{{"station_id":"a",{ts},"temperature":1e999}}"#)),
            InvalidReason::NonFinite
        );
        for literal in ["NaN", "Infinity", "-Infinity"] {
            for line in [
                format!(r#"{{"station_id":"a",{ts},"temperature":{literal}}}"#),
                format!("{{\"station_id\":\"a\",\n{ts},\n \"temperature\":1, \"pressure\": {literal}}}"),
            ] {
                assert_eq!(reason(&line), InvalidReason::NonFinite, "{line}");
            }
        }
        assert_eq!(
            reason(&format!(r#"{{"station_id":"a",{ts},"temperature":Nonsense}}"#)),
            InvalidReason::MalformedJson
        );
        assert_eq!(
            reason(&format!(r#"{{"station_id":"a",{ts},"temperature":60.001}}"#)),
            InvalidReason::OutOfRange
        );
        assert_eq!(
            reason(&format!(r#"{{"station_id":"a",{ts},"temperature":-90.5}}"#)),
            InvalidReason::OutOfRange
        );
        assert_eq!(
            reason(&format!(
                r#"{{"station_id":"a",{ts},"temperature":1,"humidity":100.5}}"#
            )),
            InvalidReason::OutOfRange
        );
        assert_eq!(
            reason(&format!(r#"{{"station_id":"a",{ts},"temperature":1,"pressure":299}}"#)),
            InvalidReason::OutOfRange
        );
        assert_eq!(
            reason(&format!(
                r#"{{"station_id":"a",{ts},"temperature":1,"wind_speed":-0.1}}"#
            )),
            InvalidReason::OutOfRange
        );
        assert_eq!(
            reason(&format!(r#"{{"station_id":"",{ts},"temperature":1}}"#)),
            InvalidReason::EmptyStationId
        );
        let long = "s".repeat(65);
        assert_eq!(
            reason(&format!(r#"{{"station_id":"{long}",{ts},"temperature":1}}"#)),
            InvalidReason::StationIdTooLong
        );
        let exact = "s".repeat(64);
        assert!(
            parse_json(
                format!(r#"{{"station_id":"{exact}",{ts},"temperature":60}}"#).as_bytes(),
                0
            )
            .is_ok()
        );
    }

    #[test]
    fn boundaries_are_inclusive() {
        for (field, v) in [
            ("temperature", "-90"),
            ("temperature", "60.0"),
            ("humidity", "0"),
            ("humidity", "100"),
            ("pressure", "300"),
            ("pressure", "1100"),
            ("wind_speed", "120"),
        ] {
            let line = format!(r#"{{"station_id":"a","timestamp":0,"temperature":1,"{field}":{v}}}"#);
            assert!(parse_json(line.as_bytes(), 0).is_ok(), "{line}");
        }
    }
}
