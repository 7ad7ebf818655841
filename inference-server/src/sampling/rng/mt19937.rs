//! The Mersenne Twister MT19937 as PyTorch's CPU generator runs it (`at::mt19937`).
//!
//! `torch.Generator().manual_seed(s)` keeps the full 64-bit seed but initialises the engine
//! from its low 32 bits only (standard Knuth seeding, multiplier 1812433253), so seeds that
//! differ by a multiple of 2^32 give the same CPU noise.

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER_MASK: u32 = 0x8000_0000;
const LOWER_MASK: u32 = 0x7fff_ffff;

/// An MT19937 engine seeded the way PyTorch seeds its CPU generator.
#[derive(Clone)]
pub struct Mt19937 {
    state: [u32; N],
    index: usize,
}

impl std::fmt::Debug for Mt19937 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mt19937")
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl Mt19937 {
    /// A fresh engine for `seed` (only the low 32 bits are used, as in PyTorch).
    pub fn new(seed: u64) -> Self {
        let mut state = [0u32; N];
        state[0] = seed as u32;
        for i in 1..N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Self { state, index: N }
    }

    /// The next 32-bit output (`CPUGeneratorImpl::random()`).
    pub fn next_u32(&mut self) -> u32 {
        if self.index >= N {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^= y >> 18;
        y
    }

    /// The next 64-bit output (`CPUGeneratorImpl::random64()`): two draws, the first is the
    /// high word.
    pub fn next_u64(&mut self) -> u64 {
        let hi = u64::from(self.next_u32());
        let lo = u64::from(self.next_u32());
        (hi << 32) | lo
    }

    fn twist(&mut self) {
        for i in 0..N {
            let y = (self.state[i] & UPPER_MASK) | (self.state[(i + 1) % N] & LOWER_MASK);
            let mut v = y >> 1;
            if y & 1 != 0 {
                v ^= MATRIX_A;
            }
            self.state[i] = self.state[(i + M) % N] ^ v;
        }
        self.index = 0;
    }
}
