//! When to ask Open-Meteo next: the politeness rules, as pure functions of the clock.
//!
//! - **Regular polls** fall on the wall-clock grid of the interval (for 15 minutes: on the
//!   quarter hours, when Open-Meteo's `current` values change), a little after the
//!   boundary so the new values exist, with jitter so that many producers do not arrive
//!   together.
//! - **429** (rate limited): wait for the reset the reason names — the next minute, hour
//!   or UTC day — plus jitter. An unrecognised reason waits for the next hour.
//! - **5xx, timeouts, broken connections, malformed bodies**: exponential backoff from
//!   30 s, doubling per consecutive failure, with jitter, but never later than the next
//!   regular poll (a new quarter hour is worth trying anyway).
//! - **Other 4xx**: the request itself is wrong (bad coordinates); retrying cannot help,
//!   so wait for the next regular poll and say so.
//! - Nothing is ever scheduled sooner than [`MIN_GAP_MS`] after the previous request.

/// Milliseconds per minute.
const MINUTE_MS: u64 = 60_000;
/// Milliseconds per hour.
const HOUR_MS: u64 = 60 * MINUTE_MS;
/// Milliseconds per day.
const DAY_MS: u64 = 24 * HOUR_MS;
/// The shortest gap between two requests, whatever happened.
pub const MIN_GAP_MS: u64 = 10_000;
/// First retry delay after a server-side failure.
pub const BACKOFF_BASE_MS: u64 = 30_000;
/// Regular polls wait this long after the grid boundary, so the new values exist...
const AFTER_BOUNDARY_MS: u64 = 30_000;
/// ...plus up to this much jitter.
const POLL_JITTER_MS: u64 = 90_000;
/// Jitter added to a rate-limit reset.
const RESET_JITTER_MS: u64 = 30_000;

/// The rate-limit window a 429's reason names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// "Minutely API request limit exceeded…"
    Minutely,
    /// "Hourly API request limit exceeded…"
    Hourly,
    /// "Daily API request limit exceeded…"
    Daily,
}

impl Limit {
    /// Reads the window from a 429 reason text; `None` when it names none.
    pub fn from_reason(reason: &str) -> Option<Limit> {
        let r = reason.to_ascii_lowercase();
        if r.contains("minutely") || r.contains("one minute") {
            Some(Limit::Minutely)
        } else if r.contains("hourly") || r.contains("next hour") {
            Some(Limit::Hourly)
        } else if r.contains("daily") || r.contains("tomorrow") {
            Some(Limit::Daily)
        } else {
            None
        }
    }

    fn period_ms(self) -> u64 {
        match self {
            Limit::Minutely => MINUTE_MS,
            Limit::Hourly => HOUR_MS,
            Limit::Daily => DAY_MS,
        }
    }
}

/// A small deterministic generator for jitter (SplitMix64): seeded, so tests can predict
/// every delay, and producers seeded differently spread out.
#[derive(Clone, Debug)]
pub struct Jitter(u64);

impl Jitter {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Jitter(seed)
    }

    /// Uniform in `0..bound` (0 when `bound` is 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        if bound == 0 { 0 } else { z % bound }
    }
}

/// The start of the next grid period of `period_ms` after `now_ms`.
fn next_boundary(now_ms: u64, period_ms: u64) -> u64 {
    (now_ms / period_ms + 1) * period_ms
}

/// The next regular poll after `now_ms` for an interval of `interval_ms`.
pub fn next_regular(now_ms: u64, interval_ms: u64, jitter: &mut Jitter) -> u64 {
    let at = next_boundary(now_ms, interval_ms) + AFTER_BOUNDARY_MS + jitter.below(POLL_JITTER_MS);
    at.max(now_ms + MIN_GAP_MS)
}

/// When to ask again after a 429 naming `limit` (the next hour when it names none).
pub fn after_rate_limit(now_ms: u64, limit: Option<Limit>, jitter: &mut Jitter) -> u64 {
    let period = limit.unwrap_or(Limit::Hourly).period_ms();
    let at = next_boundary(now_ms, period) + 1_000 + jitter.below(RESET_JITTER_MS);
    at.max(now_ms + MIN_GAP_MS)
}

/// When to retry after the `failures`-th consecutive server-side failure (1 = first).
pub fn after_failure(now_ms: u64, failures: u32, interval_ms: u64, jitter: &mut Jitter) -> u64 {
    let exponent = failures.saturating_sub(1).min(16);
    let delay = BACKOFF_BASE_MS.saturating_mul(1 << exponent);
    // Jitter in [delay/2, delay): spreads retries without ever retrying sooner than half.
    let delay = delay / 2 + jitter.below(delay / 2);
    let regular = next_regular(now_ms, interval_ms, jitter);
    (now_ms + delay).min(regular).max(now_ms + MIN_GAP_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-20T12:07:13Z.
    const NOW: u64 = 1_795_176_000_000 + 7 * MINUTE_MS + 13_000;
    const QUARTER: u64 = 15 * MINUTE_MS;

    #[test]
    fn regular_polls_land_after_the_next_quarter_hour() {
        let mut j = Jitter::new(1);
        for _ in 0..100 {
            let at = next_regular(NOW, QUARTER, &mut j);
            let boundary = 1_795_176_000_000 + QUARTER;
            assert!((boundary + 30_000..boundary + 120_000).contains(&at), "{at}");
        }
        // Just before a boundary it is still the next one, never less than the minimum gap.
        let at = next_regular(1_795_176_000_000 + QUARTER - 1, QUARTER, &mut j);
        assert!(at >= 1_795_176_000_000 + QUARTER - 1 + MIN_GAP_MS);
    }

    #[test]
    fn rate_limits_wait_for_the_named_reset() {
        let mut j = Jitter::new(2);
        let cases = [
            (
                "Minutely API request limit exceeded. Please try again in one minute.",
                1_795_176_000_000 + 8 * MINUTE_MS,
            ),
            (
                "Hourly API request limit exceeded. Please try again in the next hour.",
                1_795_176_000_000 + HOUR_MS,
            ),
            (
                "Daily API request limit exceeded. Please try again tomorrow.",
                1_795_219_200_000,
            ),
            ("Too many requests", 1_795_176_000_000 + HOUR_MS),
        ];
        for (reason, reset) in cases {
            let at = after_rate_limit(NOW, Limit::from_reason(reason), &mut j);
            assert!(
                (reset + 1_000..reset + 31_000).contains(&at),
                "{reason}: {at} vs {reset}"
            );
        }
    }

    #[test]
    fn failures_back_off_exponentially_but_not_past_the_next_poll() {
        let mut j = Jitter::new(3);
        let delays: Vec<u64> = (1..=4).map(|n| after_failure(NOW, n, QUARTER, &mut j) - NOW).collect();
        for (n, d) in delays.iter().enumerate() {
            let full = BACKOFF_BASE_MS << n;
            assert!((full / 2..full).contains(d), "failure {}: {d}", n + 1);
        }
        // Many failures: capped by the next regular poll (12:15 + 30..120 s).
        let at = after_failure(NOW, 12, QUARTER, &mut j);
        assert!(at <= 1_795_176_000_000 + QUARTER + 120_000);
        assert!(at >= NOW + MIN_GAP_MS);
    }
}
