//! Counter-based random numbers.
//!
//! Every random choice in training (batch windows, dropout masks) is a pure
//! function of `(seed, stream, counter)`. Nothing has to be saved to resume a
//! run exactly, and the numbers do not depend on how work is split across
//! threads: a dropout mask is the same on 1 thread or 16.

/// SplitMix64's finaliser: a fast bijective mix of 64 bits.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A random 64-bit value for position `index` of stream `stream` under `seed`.
#[inline]
pub fn hash3(seed: u64, stream: u64, index: u64) -> u64 {
    mix64(mix64(mix64(seed) ^ stream) ^ index)
}

/// A uniform `f32` in `[0, 1)` from 24 random bits.
#[inline]
pub fn unit_f32(bits: u64) -> f32 {
    (bits >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

/// A sequential generator over one stream: `next` returns `hash3(seed, stream, 0)`,
/// then index 1, and so on. Its whole state is the three integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rng {
    pub seed: u64,
    pub stream: u64,
    pub counter: u64,
}

impl Rng {
    pub fn new(seed: u64, stream: u64) -> Self {
        Rng {
            seed,
            stream,
            counter: 0,
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let value = hash3(self.seed, self.stream, self.counter);
        self.counter += 1;
        value
    }

    /// A uniform `f32` in `[0, 1)`.
    pub fn next_f32(&mut self) -> f32 {
        unit_f32(self.next_u64())
    }

    /// A uniform integer in `0..n` (n > 0); the modulo bias is below 2^-40 for
    /// any n a corpus can have.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let a: Vec<u64> = (0..4)
            .map(|_| 0)
            .scan(Rng::new(7, 1), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..4)
            .map(|_| 0)
            .scan(Rng::new(7, 1), |r, _| Some(r.next_u64()))
            .collect();
        let c: Vec<u64> = (0..4)
            .map(|_| 0)
            .scan(Rng::new(7, 2), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn below_is_roughly_uniform() {
        let mut rng = Rng::new(1, 0);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[rng.below(10) as usize] += 1;
        }
        for c in counts {
            assert!((9_500..10_500).contains(&c), "{counts:?}");
        }
    }
}
