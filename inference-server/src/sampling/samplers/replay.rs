//! A [`StepNoise`] that replays recorded step noise in call order, e.g. the draws a
//! reference implementation's `noise_sampler` returned, so a stochastic sampler (DPM++ SDE,
//! the ancestral samplers) can be compared with it exactly.

use super::StepNoise;

/// Recorded draws handed out one per [`StepNoise::noise`] call, with each call's
/// `(sigma, sigma_next)` kept for inspection.
///
/// A draw shorter than the requested length is padded with zeros, a longer one truncated;
/// once the draws run out, calls return zeros. [`ReplayNoise::mismatches`] counts those
/// calls so a caller can tell the replay did not fit the run.
#[derive(Debug, Clone, Default)]
pub struct ReplayNoise {
    draws: Vec<Vec<f32>>,
    next: usize,
    calls: Vec<(f64, f64)>,
    mismatches: usize,
}

impl ReplayNoise {
    /// Replays `draws` in order.
    pub fn new(draws: Vec<Vec<f32>>) -> Self {
        ReplayNoise {
            draws,
            ..ReplayNoise::default()
        }
    }

    /// The `(sigma, sigma_next)` of every call so far, in order.
    pub fn calls(&self) -> &[(f64, f64)] {
        &self.calls
    }

    /// Draws not yet handed out.
    pub fn remaining(&self) -> usize {
        self.draws.len().saturating_sub(self.next)
    }

    /// Calls that got a padded, truncated or missing draw.
    pub fn mismatches(&self) -> usize {
        self.mismatches
    }
}

impl StepNoise for ReplayNoise {
    fn noise(&mut self, sigma: f64, sigma_next: f64, len: usize) -> Vec<f32> {
        self.calls.push((sigma, sigma_next));
        let mut out = self.draws.get(self.next).cloned().unwrap_or_default();
        self.next += 1;
        if out.len() != len {
            self.mismatches += 1;
            out.resize(len, 0.0);
        }
        out
    }
}
