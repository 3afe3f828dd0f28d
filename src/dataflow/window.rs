//! Sliding-window aggregates: the `reduce` that folds a station's live panes into one
//! exact [`WindowAgg`], and its conversion to the [`WindowFeatures`] wire type.
//!
//! Because each pane is present in the collection exactly while it belongs to the window
//! ending at the current time (see [`super::pane`]), the accumulated input of a station's
//! key at time `E` is precisely the ≤ 5 panes of the window `[E − 5 min, E)`. The reduce
//! recomputes that window from those panes whenever the set changes, and differential
//! keeps its output arranged, compacted to the frontier, so state is bounded by the live
//! windows rather than by history.
//!
//! All sums are exact integers: merging panes in any order, on any number of workers,
//! gives bit-identical aggregates, which is what makes the output independent of `-w`.

use serde::{Deserialize, Serialize};

use super::pane::{Pane, VarMoments};
use crate::schema::{Var, VariableStats};

/// Window moments of one variable. Time is milliseconds since the window's first pane.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct VarWindow {
    /// Readings carrying the variable.
    pub count: u64,
    /// Smallest value, milli-units.
    pub min: i32,
    /// Largest value, milli-units.
    pub max: i32,
    /// Σv.
    pub sum: i64,
    /// Σv².
    pub sumsq: i128,
    /// Σt.
    pub st: i128,
    /// Σt².
    pub stt: i128,
    /// Σt·v.
    pub stv: i128,
}

impl VarWindow {
    /// Adds a pane's moments, shifting its times by `shift_ms`:
    /// Σ(t+d) = Σt + n·d, Σ(t+d)² = Σt² + 2d·Σt + n·d², Σ(t+d)·v = Σt·v + d·Σv.
    fn merge(&mut self, p: &VarMoments, shift_ms: i128) {
        if p.count == 0 {
            return;
        }
        let n = i128::from(p.count);
        if self.count == 0 {
            self.min = p.min;
            self.max = p.max;
        } else {
            self.min = self.min.min(p.min);
            self.max = self.max.max(p.max);
        }
        self.count += u64::from(p.count);
        self.sum += p.sum;
        self.sumsq += i128::from(p.sumsq);
        let st = i128::from(p.st);
        self.st += st + n * shift_ms;
        self.stt += i128::from(p.stt) + 2 * shift_ms * st + n * shift_ms * shift_ms;
        self.stv += i128::from(p.stv) + shift_ms * i128::from(p.sum);
    }

    /// The mean as an exact fraction of milli-units: (Σv, n).
    pub fn mean_fraction(&self) -> Option<(i128, i128)> {
        (self.count > 0).then(|| (i128::from(self.sum), i128::from(self.count)))
    }

    /// Engineering-unit statistics; `None` when no reading carried the variable.
    pub fn stats(&self) -> Option<VariableStats> {
        if self.count == 0 {
            return None;
        }
        let n = i128::from(self.count);
        let sum = i128::from(self.sum);
        let std = (n >= 2).then(|| {
            // n·Σv² − (Σv)² is exact and non-negative; one rounding at the end.
            let spread = n * self.sumsq - sum * sum;
            (spread as f64 / (n * (n - 1)) as f64).sqrt() / 1000.0
        });
        let den = n * self.stt - self.st * self.st;
        let slope_per_hour = (n >= 2 && den != 0).then(|| {
            let num = n * self.stv - self.st * sum;
            // milli-units per ms → units per hour: × 3 600 000 / 1 000.
            num as f64 * 3600.0 / den as f64
        });
        Some(VariableStats {
            count: self.count,
            mean: sum as f64 / (n * 1000) as f64,
            std,
            min: f64::from(self.min) / 1000.0,
            max: f64::from(self.max) / 1000.0,
            slope_per_hour,
        })
    }
}

/// The exact aggregate of one station's window.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct WindowAgg {
    /// Readings in the window.
    pub count: u64,
    /// Per-variable moments in [`Var::ALL`] order.
    pub vars: [VarWindow; 4],
}

impl WindowAgg {
    /// Folds the live panes of one station (sorted by minute, as `reduce` presents them).
    /// Diffs are pane multiplicities; each (station, minute) pane is built once, so they
    /// are 1, but a multiplicity is honoured rather than assumed.
    pub fn from_panes(panes: &[(&(u64, Pane), isize)]) -> WindowAgg {
        let mut agg = WindowAgg::default();
        let Some(((origin, _), _)) = panes.first() else {
            return agg;
        };
        for ((minute, pane), diff) in panes {
            let shift = i128::from(minute - origin);
            for _ in 0..(*diff).max(0) {
                agg.count += u64::from(pane.count);
                for var in Var::ALL {
                    agg.vars[var as usize].merge(&pane.vars[var as usize], shift);
                }
            }
        }
        agg
    }
}

/// Exact one-minute change of each variable's mean: (numerator, denominator) in
/// milli-units, so that the join output stays `Ord` and cancels exactly.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct TrendDelta {
    /// Per variable, `mean_now − mean_prev` as a fraction; `None` if either side lacks it.
    pub change: [Option<(i128, i128)>; 4],
}

impl TrendDelta {
    /// The change from `prev` (the window ending one minute earlier) to `now`.
    pub fn between(now: &WindowAgg, prev: &WindowAgg) -> TrendDelta {
        let mut change = [None; 4];
        for (slot, (a, b)) in change.iter_mut().zip(now.vars.iter().zip(&prev.vars)) {
            if let (Some((s1, n1)), Some((s2, n2))) = (a.mean_fraction(), b.mean_fraction()) {
                *slot = Some((s1 * n2 - s2 * n1, n1 * n2));
            }
        }
        TrendDelta { change }
    }

    /// The change of `var` in engineering units.
    pub fn value(&self, var: Var) -> Option<f64> {
        self.change[var as usize].map(|(num, den)| num as f64 / (den * 1000) as f64)
    }
}
