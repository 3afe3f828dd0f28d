//! Recursive least squares with exponential forgetting: the per-station online learner.
//!
//! A pooled model applied to an unseen station is biased in station-specific ways (its
//! daily swing, its exposure, its sensor). Each station therefore learns a small linear
//! *correction* on top of the pooled forecast from its own verified forecasts. RLS gives
//! the exact ridge solution of all residuals seen so far in O(d²) per update with O(d²)
//! state, so the learner costs a few hundred bytes and nanoseconds per station.
//!
//! Shrinkage toward the prior: the weights start at zero (no correction) with covariance
//! `prior_var · I`, which is ridge regularisation toward the pooled model; a new station
//! therefore behaves like the pooled model and moves away only as evidence accumulates.
//! The forgetting factor lets the correction follow seasons; the covariance is kept from
//! winding up when inputs stop varying by capping its trace.

use serde::{Deserialize, Serialize};

/// Dimension of the correction's input vector.
pub const DIM: usize = 8;

/// Learner settings, stored with the forecast model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RlsParams {
    /// Forgetting factor λ in (0, 1]: the weight of a sample decays as λ^age.
    pub forgetting: f32,
    /// Prior variance of each weight: smaller means stronger shrinkage to no correction.
    pub prior_var: f32,
}

impl Default for RlsParams {
    fn default() -> Self {
        RlsParams {
            forgetting: 0.998,
            prior_var: 0.05,
        }
    }
}

/// One learner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rls {
    /// Weights of the correction.
    pub theta: [f32; DIM],
    /// Inverse information matrix, row-major.
    p: [[f32; DIM]; DIM],
    /// Samples learned.
    pub n: u32,
}

impl Rls {
    /// A learner at the prior.
    pub fn new(params: &RlsParams) -> Rls {
        let mut p = [[0.0; DIM]; DIM];
        for (i, row) in p.iter_mut().enumerate() {
            row[i] = params.prior_var;
        }
        Rls {
            theta: [0.0; DIM],
            p,
            n: 0,
        }
    }

    /// The correction for input `z`.
    pub fn predict(&self, z: &[f32; DIM]) -> f32 {
        self.theta.iter().zip(z).map(|(a, b)| a * b).sum()
    }

    /// Learns that the correction for `z` should have been `target`. The error is clipped
    /// to ±`clip` (Huber-style): forecasts are judged by absolute error, and one passing
    /// front should not drag a station's correction around for days.
    pub fn update(&mut self, z: &[f32; DIM], target: f32, clip: f32, params: &RlsParams) {
        if !target.is_finite() || z.iter().any(|v| !v.is_finite()) {
            return;
        }
        let lambda = params.forgetting;
        let mut pz = [0.0f32; DIM];
        for (i, out) in pz.iter_mut().enumerate() {
            *out = self.p[i].iter().zip(z).map(|(a, b)| a * b).sum();
        }
        let denom = lambda + z.iter().zip(&pz).map(|(a, b)| a * b).sum::<f32>();
        if denom <= f32::EPSILON {
            return;
        }
        let error = (target - self.predict(z)).clamp(-clip, clip);
        for (theta, pz) in self.theta.iter_mut().zip(&pz) {
            *theta += pz / denom * error;
        }
        // P ← (P − P z zᵀ P / denom) / λ; P is symmetric, so P z = (zᵀ P)ᵀ.
        let mut trace = 0.0;
        for i in 0..DIM {
            for j in 0..DIM {
                self.p[i][j] = (self.p[i][j] - pz[i] * pz[j] / denom) / lambda;
            }
            trace += self.p[i][i];
        }
        // Without excitation forgetting inflates P without bound, and the next unusual
        // input would then swing the weights wildly; cap it at the prior's trace.
        let cap = params.prior_var * DIM as f32;
        if trace > cap {
            let scale = cap / trace;
            for row in &mut self.p {
                for v in row {
                    *v *= scale;
                }
            }
        }
        self.n = self.n.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_a_linear_correction() {
        let params = RlsParams {
            forgetting: 1.0,
            prior_var: 100.0,
        };
        let mut rls = Rls::new(&params);
        for i in 0..500 {
            let a = (i as f32 * 0.37).sin();
            let b = (i as f32 * 0.11).cos();
            let z = [1.0, a, b, 0.0, 0.0, 0.0, 0.0, 0.0];
            rls.update(&z, 0.5 + 2.0 * a - b, f32::INFINITY, &params);
        }
        assert!((rls.theta[0] - 0.5).abs() < 0.01, "{:?}", rls.theta);
        assert!((rls.theta[1] - 2.0).abs() < 0.01);
        assert!((rls.theta[2] + 1.0).abs() < 0.01);
    }

    #[test]
    fn shrinks_toward_no_correction() {
        let params = RlsParams::default();
        let mut rls = Rls::new(&params);
        let z = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        rls.update(&z, 10.0, f32::INFINITY, &params);
        // One sample with a strong prior moves the bias only part of the way.
        assert!(rls.theta[0] > 0.0 && rls.theta[0] < 10.0);
        rls.update(&z, f32::NAN, f32::INFINITY, &params);
        assert_eq!(rls.n, 1, "non-finite targets are ignored");
    }
}
