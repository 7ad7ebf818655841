//! A seeded Brownian-tree noise source for the SDE samplers (DPM++ SDE, DPM++ 2M SDE).
//!
//! k-diffusion's `BrownianTreeNoiseSampler` (torchsde's `BrownianTree`) makes the noise of
//! the step from `σ` to `σ'` the Brownian increment `(W(σ') - W(σ)) / sqrt(|σ' - σ|)` of one
//! Brownian path per seed, so the noise depends on the interval, not on the call order. This
//! source does the same with its own tree: `W(t0) = 0`, `W(t1) ~ N(0, t1 - t0)`, and each
//! midpoint drawn from the Brownian bridge, the draw keyed by (seed, node), down to intervals
//! of `(t1 - t0) / 2^32` (linear in between). It does not reproduce torchsde's numbers (the
//! issue allows that); it is deterministic for a seed and platform-independent (SplitMix64 and
//! Box–Muller in f64).

use super::StepNoise;
use crate::util::splitmix::SplitMix64;

const DEPTH: u32 = 32;

/// `len` standard normals keyed by `(seed, node)`.
fn normals(seed: u64, node: u64, len: usize) -> Vec<f64> {
    let mut mix = SplitMix64(seed ^ node.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    mix.next_u64();
    let mut out = Vec::with_capacity(len + 1);
    while out.len() < len {
        let (a, b) = mix.normal_pair();
        out.push(a);
        out.push(b);
    }
    out.truncate(len);
    out
}

/// A Brownian path on `[t0, t1]` per seed, queried as a [`StepNoise`].
#[derive(Debug, Clone)]
pub struct BrownianNoise {
    seed: u64,
    t0: f64,
    t1: f64,
}

impl BrownianNoise {
    /// A path on `[sigma_min, sigma_max]` (k-diffusion: the smallest positive and the largest
    /// sigma of the schedule). Queries outside the interval are clamped to it.
    pub fn new(seed: u64, sigma_min: f64, sigma_max: f64) -> Self {
        let (t0, t1) = if sigma_min <= sigma_max {
            (sigma_min, sigma_max)
        } else {
            (sigma_max, sigma_min)
        };
        BrownianNoise { seed, t0, t1 }
    }

    /// `W(t)`, `len` values.
    pub fn w(&self, t: f64, len: usize) -> Vec<f64> {
        let t = t.clamp(self.t0, self.t1);
        let (mut a, mut b) = (self.t0, self.t1);
        let scale = (b - a).sqrt();
        let mut wa = vec![0.0; len];
        let mut wb: Vec<f64> = normals(self.seed, 1, len)
            .into_iter()
            .map(|z| z * scale)
            .collect();
        let mut node = 1u64;
        for _ in 0..DEPTH {
            if t == a {
                return wa;
            }
            if t == b {
                return wb;
            }
            let m = 0.5 * (a + b);
            let sd = (0.25 * (b - a)).sqrt();
            let z = normals(
                self.seed,
                node.wrapping_mul(2).wrapping_add(1) ^ (1 << 63),
                len,
            );
            let wm: Vec<f64> = wa
                .iter()
                .zip(&wb)
                .zip(&z)
                .map(|((x, y), z)| 0.5 * (x + y) + sd * z)
                .collect();
            if t < m {
                b = m;
                wb = wm;
                node = node.wrapping_mul(2);
            } else {
                a = m;
                wa = wm;
                node = node.wrapping_mul(2).wrapping_add(1);
            }
        }
        let w = if b > a { (t - a) / (b - a) } else { 0.0 };
        wa.iter().zip(&wb).map(|(x, y)| x + w * (y - x)).collect()
    }
}

impl StepNoise for BrownianNoise {
    fn noise(&mut self, sigma: f64, sigma_next: f64, len: usize) -> Vec<f32> {
        let (lo, hi) = (
            sigma.min(sigma_next).clamp(self.t0, self.t1),
            sigma.max(sigma_next).clamp(self.t0, self.t1),
        );
        if hi <= lo {
            return vec![0.0; len];
        }
        let (w_lo, w_hi) = (self.w(lo, len), self.w(hi, len));
        // k-diffusion's sign: the increment in the direction of travel (sigma → sigma_next).
        let sign = if sigma_next < sigma { -1.0 } else { 1.0 };
        let norm = sign / (hi - lo).sqrt();
        w_hi.iter()
            .zip(&w_lo)
            .map(|(h, l)| ((h - l) * norm) as f32)
            .collect()
    }
}
