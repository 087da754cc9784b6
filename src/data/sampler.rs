//! Random training windows.
//!
//! A batch is `B` windows of `T + 1` consecutive tokens at random offsets:
//! inputs are the first `T` tokens of each window, targets the last `T` (each
//! target is the token that follows its input). Offsets come from the
//! counter-based RNG keyed by `(seed, purpose, step)`, so batch `k` is the same
//! whether or not the run was interrupted before it.

use super::TokenSource;
use crate::error::{Error, Result};
use crate::rng::{Rng, mix64};

/// Cuts a token source into `(inputs, targets)` batches of shape `(B, T)`.
pub struct BatchSampler<'a> {
    source: &'a dyn TokenSource,
    batch_size: usize,
    block_size: usize,
    seed: u64,
}

impl<'a> BatchSampler<'a> {
    /// `name` is used in the error when the source is too short for one window.
    pub fn new(
        source: &'a dyn TokenSource,
        batch_size: usize,
        block_size: usize,
        seed: u64,
        name: &str,
    ) -> Result<Self> {
        if source.len() < block_size + 1 {
            return Err(Error::Data(format!(
                "the {name} split has {} tokens, fewer than one window of block_size + 1 = {}; \
                 use more text, a smaller --block or a different --val-fraction",
                source.len(),
                block_size + 1
            )));
        }
        Ok(BatchSampler {
            source,
            batch_size,
            block_size,
            seed,
        })
    }

    /// Fill `inputs` and `targets` (each `B * T` long) with batch number `index`
    /// of stream `stream` (e.g. one stream per training micro-step, one for eval).
    pub fn fill(&self, stream: u64, index: u64, inputs: &mut [u32], targets: &mut [u32]) {
        let t = self.block_size;
        assert_eq!(inputs.len(), self.batch_size * t);
        assert_eq!(targets.len(), self.batch_size * t);
        let mut rng = Rng::new(self.seed, mix64(stream) ^ index);
        let starts = (self.source.len() - t) as u64; // valid window starts: 0..=len-T-1
        for b in 0..self.batch_size {
            let start = rng.below(starts) as usize;
            self.source.read(start, &mut inputs[b * t..(b + 1) * t]);
            self.source
                .read(start + 1, &mut targets[b * t..(b + 1) * t]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_inputs_shifted_by_one() {
        let tokens: Vec<u32> = (0..100).collect();
        let s = BatchSampler::new(&tokens, 4, 8, 3, "train").unwrap();
        let (mut x, mut y) = (vec![0; 32], vec![0; 32]);
        s.fill(0, 5, &mut x, &mut y);
        for i in 0..32 {
            assert_eq!(y[i], x[i] + 1);
        }
        let (mut x2, mut y2) = (vec![0; 32], vec![0; 32]);
        s.fill(0, 5, &mut x2, &mut y2);
        assert_eq!(x, x2);
        s.fill(0, 6, &mut x2, &mut y2);
        assert_ne!(x, x2);
    }

    #[test]
    fn every_window_fits_and_the_last_is_reachable() {
        let tokens: Vec<u32> = (0..10).collect();
        let s = BatchSampler::new(&tokens, 1, 9, 0, "train").unwrap();
        let (mut x, mut y) = (vec![0; 9], vec![0; 9]);
        s.fill(0, 0, &mut x, &mut y);
        assert_eq!(y[8], 9);
        assert!(
            BatchSampler::new(&tokens, 1, 10, 0, "val")
                .err()
                .unwrap()
                .to_string()
                .contains("val split")
        );
    }
}
