//! Seeds to initial noise, reproducing the reference implementations number for number.
//!
//! * [`GeneratorKind::TorchCpu`]: `torch.randn(shape, generator=torch.Generator().manual_seed(s))`
//!   on the CPU, which is what diffusers uses with a CPU generator and what A1111 uses with
//!   "Random number generator source: CPU".
//! * [`GeneratorKind::Philox`]: PyTorch's CUDA generator (Philox4x32-10) as A1111's
//!   `modules/rng_philox.py` computes it on the CPU ("NV"), so a seed copied from an A1111
//!   infotext made on an NVIDIA GPU reproduces its starting noise without a GPU.
//!
//! A1111 draws the noise of each image separately, with shape `[4, h/8, w/8]`; batch item `i`
//! uses `seed + i` and `subseed + i` ([`batch_noise`]); a subseed is mixed in with A1111's
//! `slerp` ([`image_noise`]). diffusers with one generator instead draws the whole batch in one
//! call: that is [`randn`]`(TorchCpu, seed, [batch, 4, h/8, w/8])`. Noise drawn later (ancestral
//! and SDE samplers) continues each image's [`Generator`]. Not implemented: A1111's "resize seed from width/height"
//! (noise drawn at another size and pasted centred) and `eta_noise_seed_delta`, which only
//! affects noise drawn after the initial one.

pub mod mt19937;
pub mod philox;
pub mod torch_cpu;

use std::fmt;
use std::str::FromStr;

/// The largest number of noise values one call draws: the Philox counter index is 32 bits.
pub const MAX_NOISE_ELEMENTS: usize = 1 << 32;

/// The exclusive upper bound of random seeds: A1111 picks `random.randrange(4294967294)`.
pub const RANDOM_SEED_BOUND: u64 = 4_294_967_294;

/// Which generator turns a seed into noise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum GeneratorKind {
    /// PyTorch's CPU generator (MT19937): diffusers with a CPU generator, A1111 "CPU".
    #[default]
    TorchCpu,
    /// PyTorch's CUDA generator (Philox4x32-10): A1111 "GPU" on NVIDIA cards and "NV".
    Philox,
}

impl GeneratorKind {
    /// Parses a source name, case-insensitively. A1111's "Random number generator source"
    /// values map as: `"CPU"` → [`TorchCpu`](Self::TorchCpu); `"GPU"` and `"NV"` →
    /// [`Philox`](Self::Philox) (A1111's "GPU" runs `torch.randn` on the CUDA device, whose
    /// Philox generator "NV" emulates; it matches on NVIDIA GPUs, other vendors' GPU noise
    /// is not reproduced). Also accepted: `"torch_cpu"`, `"mt19937"`, `"philox"`, `"cuda"`.
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "cpu" | "torch_cpu" | "torch-cpu" | "mt19937" => Some(Self::TorchCpu),
            "gpu" | "nv" | "philox" | "cuda" => Some(Self::Philox),
            _ => None,
        }
    }

    /// The canonical name: `"cpu"` or `"philox"` (both accepted by [`parse`](Self::parse)).
    pub fn name(self) -> &'static str {
        match self {
            Self::TorchCpu => "cpu",
            Self::Philox => "philox",
        }
    }
}

impl fmt::Display for GeneratorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for GeneratorKind {
    type Err = RngError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| RngError::UnknownSource(s.to_owned()))
    }
}

/// Why noise could not be produced.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RngError {
    /// The name is not a known [`GeneratorKind`].
    #[error("unknown noise source {0:?} (expected \"cpu\", \"gpu\", \"nv\" or \"philox\")")]
    UnknownSource(String),
    /// The shape has more than [`MAX_NOISE_ELEMENTS`] elements or its product overflows.
    #[error("noise shape {0:?} is too large")]
    TooLarge(Vec<usize>),
    /// A subseed needs at least two dimensions (A1111 normalises over dimension 1).
    #[error("subseed mixing needs a shape of rank >= 2, got {0:?}")]
    SubseedRank(Vec<usize>),
    /// `subseed_strength` must be finite.
    #[error("subseed strength {0} is not finite")]
    Strength(f32),
}

fn numel(shape: &[usize]) -> Result<usize, RngError> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_NOISE_ELEMENTS)
        .ok_or_else(|| RngError::TooLarge(shape.to_vec()))
}

/// Standard-normal noise of `shape` (row-major) from `seed`, equal to the reference's first
/// draw: `torch.randn(shape, generator=torch.Generator().manual_seed(seed))` for
/// [`GeneratorKind::TorchCpu`], `rng_philox.Generator(seed).randn(shape)` for
/// [`GeneratorKind::Philox`]. The CPU generator uses only the low 32 bits of `seed`, as PyTorch.
pub fn randn(source: GeneratorKind, seed: u64, shape: &[usize]) -> Result<Vec<f32>, RngError> {
    let n = numel(shape)?;
    Ok(match source {
        GeneratorKind::TorchCpu => torch_cpu::randn(seed, n),
        GeneratorKind::Philox => philox::randn(seed, n),
    })
}

/// A seeded noise generator whose consecutive draws equal the reference's consecutive calls on
/// one generator: `torch.randn(shape, generator=g)` for [`GeneratorKind::TorchCpu`], A1111's
/// `rng_philox.Generator(seed).randn(shape)` (its offset advancing by one per call) for
/// [`GeneratorKind::Philox`]. The first draw equals [`randn`].
#[derive(Debug, Clone)]
pub enum Generator {
    /// PyTorch's CPU generator (boxed: its Mersenne Twister state is 2.5 KB).
    TorchCpu(Box<torch_cpu::TorchCpuGenerator>),
    /// A1111's Philox generator: the seed and the number of tensors drawn so far.
    Philox {
        /// The 64-bit key.
        seed: u64,
        /// The next call's counter word 0.
        offset: u32,
    },
}

impl Generator {
    /// A fresh generator for `seed`.
    pub fn new(source: GeneratorKind, seed: u64) -> Generator {
        match source {
            GeneratorKind::TorchCpu => {
                Generator::TorchCpu(Box::new(torch_cpu::TorchCpuGenerator::new(seed)))
            }
            GeneratorKind::Philox => Generator::Philox { seed, offset: 0 },
        }
    }

    /// The next draw of `shape` (row-major).
    pub fn randn(&mut self, shape: &[usize]) -> Result<Vec<f32>, RngError> {
        let n = numel(shape)?;
        Ok(match self {
            Generator::TorchCpu(g) => g.randn(n),
            Generator::Philox { seed, offset } => {
                let out = philox::randn_at_offset(*seed, *offset, n);
                *offset = offset.wrapping_add(1);
                out
            }
        })
    }
}

/// The seed to use for a requested one: `-1` picks a random seed in `[0, 4294967294)` as A1111
/// does (the caller reports the returned value, e.g. in the infotext, so the image can be
/// reproduced); any other value is taken as PyTorch takes it (negative values wrap to `u64`).
/// Resolve subseeds the same way (A1111 also turns a subseed of -1 into a random one).
pub fn resolve_seed(seed: i64) -> u64 {
    if seed == -1 {
        rand::random_range(0..RANDOM_SEED_BOUND)
    } else {
        seed as u64
    }
}

/// The initial noise of one image, A1111's `ImageRNG.first()` for one item: the seed's noise,
/// and when `subseed_strength != 0` the subseed's noise mixed in with [`slerp`]
/// (`slerp(subseed_strength, noise, subnoise)`: 0 keeps the seed's noise, 1 gives the
/// subseed's). `shape` is the per-image shape, `[4, h/8, w/8]` in A1111.
pub fn image_noise(
    source: GeneratorKind,
    seed: u64,
    subseed: u64,
    subseed_strength: f32,
    shape: &[usize],
) -> Result<Vec<f32>, RngError> {
    if !subseed_strength.is_finite() {
        return Err(RngError::Strength(subseed_strength));
    }
    let noise = randn(source, seed, shape)?;
    if subseed_strength == 0.0 {
        return Ok(noise);
    }
    let subnoise = randn(source, subseed, shape)?;
    slerp(subseed_strength, &noise, &subnoise, shape)
}

/// The initial noise of a batch, items concatenated: item `i` is
/// [`image_noise`]`(source, seed + i, subseed + i, subseed_strength, shape)` (A1111's
/// `all_seeds` / `all_subseeds`; the additions wrap at 2^64).
pub fn batch_noise(
    source: GeneratorKind,
    seed: u64,
    subseed: u64,
    subseed_strength: f32,
    batch: usize,
    shape: &[usize],
) -> Result<Vec<f32>, RngError> {
    let per = numel(shape)?;
    let total = per
        .checked_mul(batch)
        .ok_or_else(|| RngError::TooLarge(shape.to_vec()))?;
    let mut out = Vec::with_capacity(total);
    for i in 0..batch as u64 {
        let item = image_noise(
            source,
            seed.wrapping_add(i),
            subseed.wrapping_add(i),
            subseed_strength,
            shape,
        )?;
        out.extend_from_slice(&item);
    }
    Ok(out)
}

/// A1111's `slerp(val, low, high)` (`modules/rng.py`) on tensors of `shape` (rank >= 2).
///
/// As there, norms and dot products are taken over dimension 1 (for `[C, H, W]`: along `H`,
/// one angle per `(c, w)`). If the mean dot product of the normalised tensors exceeds 0.9995
/// the result is A1111's linear fallback `low·val + high·(1 - val)` (sic: the weights are
/// swapped relative to the spherical case); otherwise
/// `sin((1 - val)·ω)/sin ω · low + sin(val·ω)/sin ω · high`. Sums are accumulated in f64.
pub fn slerp(val: f32, low: &[f32], high: &[f32], shape: &[usize]) -> Result<Vec<f32>, RngError> {
    let n = numel(shape)?;
    if shape.len() < 2 {
        return Err(RngError::SubseedRank(shape.to_vec()));
    }
    if low.len() != n || high.len() != n {
        return Err(RngError::TooLarge(shape.to_vec()));
    }
    let (outer, mid) = (shape[0], shape[1]);
    let inner: usize = shape[2..].iter().product();
    let idx = |o: usize, m: usize, k: usize| (o * mid + m) * inner + k;
    // Per (outer, inner) column: the dot product of the normalised vectors along `mid`.
    let mut dots = vec![0f32; outer * inner];
    for o in 0..outer {
        for k in 0..inner {
            let (mut ll, mut hh) = (0f64, 0f64);
            for m in 0..mid {
                let (l, h) = (f64::from(low[idx(o, m, k)]), f64::from(high[idx(o, m, k)]));
                ll += l * l;
                hh += h * h;
            }
            let (nl, nh) = ((ll.sqrt() as f32), (hh.sqrt() as f32));
            let mut dot = 0f64;
            for m in 0..mid {
                let i = idx(o, m, k);
                dot += f64::from((low[i] / nl) * (high[i] / nh));
            }
            dots[o * inner + k] = dot as f32;
        }
    }
    let mean = dots.iter().map(|&d| f64::from(d)).sum::<f64>() / dots.len().max(1) as f64;
    if mean > 0.9995 {
        return Ok(low
            .iter()
            .zip(high)
            .map(|(&l, &h)| l * val + h * (1.0 - val))
            .collect());
    }
    let mut out = vec![0f32; n];
    for o in 0..outer {
        for k in 0..inner {
            let omega = dots[o * inner + k].acos();
            let so = omega.sin();
            let a = ((1.0 - val) * omega).sin() / so;
            let b = (val * omega).sin() / so;
            for m in 0..mid {
                let i = idx(o, m, k);
                out[i] = a * low[i] + b * high[i];
            }
        }
    }
    Ok(out)
}
