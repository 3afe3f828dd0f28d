//! Event-time timestamps: RFC 3339 parsing and formatting without a date library.
//!
//! Readings carry either an RFC 3339 string or epoch milliseconds (docs/design.md §3). Parsing
//! sits on the per-reading hot path, so this module implements the proleptic Gregorian
//! conversions directly (Howard Hinnant's `days_from_civil`) instead of building a
//! calendar object per reading. Internally every time is **milliseconds since the Unix
//! epoch**; times before 1970 are rejected because timely timestamps are unsigned.

/// Milliseconds in one minute: the window slide and the pane width.
pub const MINUTE_MS: u64 = 60_000;

/// Largest accepted epoch millisecond: 9999-12-31T23:59:59.999Z. Anything later is a
/// corrupt timestamp, and the bound keeps window arithmetic far from `u64` overflow.
pub const MAX_EPOCH_MS: u64 = 253_402_300_799_999;

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

fn digits(bytes: &[u8]) -> Option<u32> {
    let mut value = 0u32;
    for &b in bytes {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u32::from(b - b'0');
    }
    Some(value)
}

/// Parses an RFC 3339 date-time (`2026-11-20T12:00:10Z`, `2026-11-20t12:00:10.250+01:00`,
/// `2026-11-20 12:00:10Z`) into epoch milliseconds.
///
/// Fractional seconds beyond milliseconds are truncated. A leap second (`:60`) is read as
/// the first instant of the next minute, which is what a monotone event clock needs.
/// Returns `None` for anything malformed or outside 1970..=9999.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    parse_rfc3339_bytes(text.as_bytes())
}

/// [`parse_rfc3339`] on raw bytes, for parsers that have not built a `str`.
pub fn parse_rfc3339_bytes(b: &[u8]) -> Option<u64> {
    let ms = u64::try_from(parse_rfc3339_signed(b)?).ok()?;
    (ms <= MAX_EPOCH_MS).then_some(ms)
}

/// Parses an RFC 3339 time into epoch ms, clamping times before 1970 to 0. For query
/// bounds, where "since 1900" simply means "since the beginning".
pub fn parse_rfc3339_clamped(text: &str) -> Option<u64> {
    parse_rfc3339_signed(text.as_bytes()).map(|ms| ms.clamp(0, MAX_EPOCH_MS as i64) as u64)
}

/// The parser proper: signed epoch ms, so callers choose what a pre-1970 time means.
fn parse_rfc3339_signed(b: &[u8]) -> Option<i64> {
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let year = i64::from(digits(&b[0..4])?);
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &b[19..];
    let mut millis = 0u32;
    if let Some((&b'.', frac)) = rest.split_first() {
        let len = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 {
            return None;
        }
        for (i, &c) in frac[..len.min(3)].iter().enumerate() {
            millis += u32::from(c - b'0') * [100, 10, 1][i];
        }
        rest = &frac[len..];
    }
    let offset_minutes: i64 = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = i64::from(digits(&[*h1, *h2])?);
            let mins = i64::from(digits(&[*m1, *m2])?);
            if hours > 23 || mins > 59 {
                return None;
            }
            let total = hours * 60 + mins;
            if *sign == b'+' { total } else { -total }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds =
        days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second) - offset_minutes * 60;
    seconds.checked_mul(1000)?.checked_add(i64::from(millis))
}

/// Formats epoch milliseconds as RFC 3339 UTC, with milliseconds only when non-zero
/// (`2026-11-20T12:01:00Z`, `2026-11-20T12:01:00.250Z`).
pub fn format_rfc3339(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let millis = ms % 1000;
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let (h, m, s) = (sod / 3600, (sod / 60) % 60, sod % 60);
    if millis == 0 {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{millis:03}Z")
    }
}

/// The start of the minute containing `ms`.
pub fn floor_minute(ms: u64) -> u64 {
    ms - ms % MINUTE_MS
}

/// The wall clock, epoch ms (0 before 1970: a clock that broken is not worth a panic).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip_over_four_centuries() {
        for days in (-1_000..150_000).step_by(7) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn parses_the_forms_rfc3339_allows() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-11-20T12:00:10Z"), Some(1_795_176_010_000));
        assert_eq!(parse_rfc3339("2026-11-20t12:00:10.25z"), Some(1_795_176_010_250));
        assert_eq!(
            parse_rfc3339("2026-11-20 13:00:10.123456+01:00"),
            Some(1_795_176_010_123)
        );
        assert_eq!(parse_rfc3339("2026-11-20T11:30:10-00:30"), Some(1_795_176_010_000));
        assert_eq!(
            parse_rfc3339("2016-12-31T23:59:60Z"),
            parse_rfc3339("2017-01-01T00:00:00Z")
        );
        assert_eq!(parse_rfc3339("2024-02-29T00:00:00Z"), Some(1_709_164_800_000));
    }

    #[test]
    fn rejects_malformed_and_out_of_range() {
        for bad in [
            "",
            "2026-11-20",
            "2026-11-20T12:00:10",
            "2026-13-20T12:00:10Z",
            "2025-02-29T00:00:00Z",
            "2026-11-20T24:00:00Z",
            "2026-11-20T12:00:10.Z",
            "2026-11-20T12:00:10+0100",
            "1969-12-31T23:59:59Z",
            "2026-11-20X12:00:10Z",
            "2026-11-20T12:00:10Z ",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn formats_whole_and_fractional_seconds() {
        assert_eq!(format_rfc3339(1_795_176_060_000), "2026-11-20T12:01:00Z");
        assert_eq!(format_rfc3339(1_795_176_060_250), "2026-11-20T12:01:00.250Z");
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
