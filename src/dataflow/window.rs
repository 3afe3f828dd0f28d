//! Sliding-window aggregates: the `reduce` that folds a station's live panes into one
//! compact [`WindowStats`], and the exact means the trend is taken from.
//!
//! Because each pane is present in the collection exactly while it belongs to the window
//! ending at the current time (see [`super::pane`]), the accumulated input of a station's
//! key at time `E` is precisely the ≤ 5 panes of the window `[E − 5 min, E)`. The reduce
//! recomputes that window from those panes whenever the set changes, and differential
//! keeps its output arranged, compacted to the frontier, so state is bounded by the live
//! windows rather than by history.
//!
//! Merging uses exact integer moments (`i128`), so any order of panes on any number of
//! workers gives the same result; the two derived floats (std, slope) are computed from
//! those exact sums with one final rounding, and stored as bit patterns so the output is
//! `Ord` and deterministic. Keeping the arranged value small matters: every window change
//! moves it through the arrangement, the join and the emitter (profiling showed a
//! 430-byte aggregate spending a quarter of the time in `memmove`).

use serde::{Deserialize, Serialize};

use super::pane::{Pane, VarMoments};
use crate::schema::{Var, VariableStats};

/// Marks an absent float in the bit-pattern fields (a NaN no arithmetic here produces).
const NONE_BITS: u64 = u64::MAX;

fn bits(v: Option<f64>) -> u64 {
    v.map_or(NONE_BITS, f64::to_bits)
}

fn unbits(b: u64) -> Option<f64> {
    (b != NONE_BITS).then(|| f64::from_bits(b))
}

/// `x as f64`, through the one-instruction `i64` conversion when `x` fits (the common
/// case): both round to nearest, so the result is identical, and the `i128` conversion is
/// a slow library call that showed up in profiles.
fn to_f64(x: i128) -> f64 {
    match i64::try_from(x) {
        Ok(v) => v as f64,
        Err(_) => x as f64,
    }
}

/// Exact window moments of one variable while merging; time is ms since the first pane.
#[derive(Clone, Copy, Debug, Default)]
struct Moments {
    count: i128,
    min: i32,
    max: i32,
    sum: i128,
    sumsq: i128,
    st: i128,
    stt: i128,
    stv: i128,
}

impl Moments {
    /// Adds a pane's moments, shifting its times by `d` ms:
    /// Σ(t+d) = Σt + n·d, Σ(t+d)² = Σt² + 2d·Σt + n·d², Σ(t+d)·v = Σt·v + d·Σv.
    fn merge(&mut self, p: &VarMoments, d: i128) {
        if p.count == 0 {
            return;
        }
        let n = i128::from(p.count);
        (self.min, self.max) = if self.count == 0 {
            (p.min, p.max)
        } else {
            (self.min.min(p.min), self.max.max(p.max))
        };
        let st = i128::from(p.st);
        self.count += n;
        self.sum += i128::from(p.sum);
        self.sumsq += i128::from(p.sumsq);
        self.st += st + n * d;
        self.stt += i128::from(p.stt) + 2 * d * st + n * d * d;
        self.stv += i128::from(p.stv) + d * i128::from(p.sum);
    }

    fn summarise(&self) -> VarSummary {
        let n = self.count;
        if n == 0 {
            return VarSummary::default();
        }
        // n·Σv² − (Σv)² and n·Σt² − (Σt)² are exact and non-negative; one rounding each.
        let std = (n >= 2).then(|| {
            let spread = n * self.sumsq - self.sum * self.sum;
            (to_f64(spread) / to_f64(n * (n - 1))).sqrt() / 1000.0
        });
        let den = n * self.stt - self.st * self.st;
        let slope = (n >= 2 && den != 0).then(|| {
            let num = n * self.stv - self.st * self.sum;
            // milli-units per ms → units per hour: × 3 600 000 / 1 000.
            to_f64(num) * 3600.0 / to_f64(den)
        });
        VarSummary {
            // A window holds at most 5 panes of ≤ 60 000 readings: both fit.
            count: n as u32,
            min: self.min,
            max: self.max,
            sum: self.sum as i64,
            std_bits: bits(std),
            slope_bits: bits(slope),
        }
    }
}

/// One variable of a window, final and compact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VarSummary {
    /// Readings carrying the variable; 0 = absent from the window.
    pub count: u32,
    /// Smallest value, milli-units.
    pub min: i32,
    /// Largest value, milli-units.
    pub max: i32,
    /// Σv, milli-units; with `count` the exact mean.
    pub sum: i64,
    /// Sample std as `f64` bits.
    pub std_bits: u64,
    /// Least-squares slope per hour as `f64` bits.
    pub slope_bits: u64,
}

impl Default for VarSummary {
    fn default() -> Self {
        VarSummary {
            count: 0,
            min: 0,
            max: 0,
            sum: 0,
            std_bits: NONE_BITS,
            slope_bits: NONE_BITS,
        }
    }
}

impl VarSummary {
    /// Engineering-unit statistics; `None` when no reading carried the variable.
    pub fn stats(&self) -> Option<VariableStats> {
        (self.count > 0).then(|| VariableStats {
            count: u64::from(self.count),
            mean: self.sum as f64 / (i64::from(self.count) * 1000) as f64,
            std: unbits(self.std_bits),
            min: f64::from(self.min) / 1000.0,
            max: f64::from(self.max) / 1000.0,
            slope_per_hour: unbits(self.slope_bits),
        })
    }
}

/// The result of one station's window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowStats {
    /// Readings in the window.
    pub count: u32,
    /// Per variable, in [`Var::ALL`] order.
    pub vars: [VarSummary; 4],
}

impl WindowStats {
    /// Folds the live panes of one station (sorted by minute, as `reduce` presents them).
    /// Diffs are pane multiplicities; each (station, minute) pane is built once, so they
    /// are 1, but a multiplicity is honoured rather than assumed.
    pub fn from_panes(panes: &[(&(u64, Pane), isize)]) -> WindowStats {
        let mut moments = [Moments::default(); 4];
        let mut count = 0u32;
        let origin = panes.first().map_or(0, |((minute, _), _)| *minute);
        for ((minute, pane), diff) in panes {
            let shift = i128::from(minute - origin);
            for _ in 0..(*diff).max(0) {
                count += pane.count;
                for var in Var::ALL {
                    moments[var as usize].merge(&pane.vars[var as usize], shift);
                }
            }
        }
        WindowStats {
            count,
            vars: moments.map(|m| m.summarise()),
        }
    }

    /// The exact means, for the trend.
    pub fn means(&self) -> Means {
        Means(self.vars.map(|v| (v.sum, v.count)))
    }
}

/// Exact per-variable means as (Σv milli-units, count); count 0 = absent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Means(pub [(i64, u32); 4]);

/// One-minute change of each variable's mean, as `f64` bits (absent = none).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TrendDelta([u64; 4]);

impl TrendDelta {
    /// The change from `prev` (the window ending one minute earlier) to `now`:
    /// (s₁·n₂ − s₂·n₁) / (n₁·n₂), exact until the final division.
    pub fn between(now: &Means, prev: &Means) -> TrendDelta {
        let mut change = [NONE_BITS; 4];
        for (slot, (&(s1, n1), &(s2, n2))) in change.iter_mut().zip(now.0.iter().zip(&prev.0)) {
            if n1 > 0 && n2 > 0 {
                let (s1, n1, s2, n2) = (i128::from(s1), i128::from(n1), i128::from(s2), i128::from(n2));
                *slot = bits(Some(to_f64(s1 * n2 - s2 * n1) / to_f64(n1 * n2 * 1000)));
            }
        }
        TrendDelta(change)
    }

    /// The change of `var` in engineering units.
    pub fn value(&self, var: Var) -> Option<f64> {
        unbits(self.0[var as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arranged_values_stay_small() {
        // Every window change moves these through the arrangement and the emitter.
        assert!(std::mem::size_of::<WindowStats>() <= 168);
        assert!(std::mem::size_of::<Means>() <= 64);
        assert_eq!(std::mem::size_of::<TrendDelta>(), 32);
    }

    #[test]
    fn fast_float_conversion_rounds_like_the_slow_one() {
        for x in [
            0i128,
            1,
            -1,
            (1 << 53) + 1,
            -(1 << 60) - 3,
            i128::from(i64::MAX),
            i128::from(i64::MIN),
            1 << 90,
            -(1 << 100) + 7,
        ] {
            assert_eq!(to_f64(x).to_bits(), (x as f64).to_bits(), "{x}");
        }
    }
}
