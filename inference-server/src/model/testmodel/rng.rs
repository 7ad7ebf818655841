//! Deterministic parameter values: each tensor's values depend only on its diffusers name.

use crate::util::splitmix::SplitMix64;

fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3)
    })
}

/// `n` standard normal values from the stream seeded by `seed_name`.
pub fn normals(seed_name: &str, n: usize) -> Vec<f32> {
    let mut rng = SplitMix64(fnv1a(seed_name));
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let (a, b) = rng.normal_pair();
        out.push(a as f32);
        out.push(b as f32);
    }
    out.truncate(n);
    out
}

/// Values of parameter `name`: weights ~ N(0, 1/fan_in), norm scales ~ 1 ± 0.1, biases small.
pub fn param_values(name: &str, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let z = normals(name, n);
    if shape.len() == 1 {
        let (mean, std) = if name.ends_with("bias") {
            (0.0, 0.05)
        } else {
            (1.0, 0.1)
        };
        return z.into_iter().map(|v| mean + std * v).collect();
    }
    let fan_in: usize = shape[1..].iter().product::<usize>().max(1);
    let std = 1.0 / (fan_in as f32).sqrt();
    z.into_iter().map(|v| std * v).collect()
}
