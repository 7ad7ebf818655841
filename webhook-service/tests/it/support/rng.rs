//! A seeded pseudo-random generator (SplitMix64) for tests that must be replayable from a
//! printed seed, and the seed itself: `SDSERVE_<NAME>_SEED` if set, else one from the clock.

/// SplitMix64: tiny, fast, and good enough to pick faults and mutate bytes.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator that replays the same sequence for the same `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `range` (`start..end`, end excluded; `end > start`).
    pub fn range(&mut self, range: std::ops::Range<u64>) -> u64 {
        range.start + self.next_u64() % (range.end - range.start)
    }

    /// An index below `len` (`len > 0`).
    pub fn below(&mut self, len: usize) -> usize {
        self.range(0..len as u64) as usize
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.range(0..100) < percent
    }

    /// One element of `items` (non-empty).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A generator for a sub-task, so that tasks running concurrently each replay their own
    /// sequence whatever the interleaving.
    pub fn fork(&mut self) -> Rng {
        Rng(self.next_u64())
    }
}

/// The seed of a randomized test: `$var` when set (to replay a run), else one from the clock.
/// Printed, so a failing run can be replayed.
pub fn seed(var: &str) -> u64 {
    let seed = match std::env::var(var) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{var}={value:?} is not a u64 seed: {e}")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    };
    println!("{var}={seed}");
    seed
}
