//! Dropout (inverted): during training each value is zeroed with probability
//! `p` and the survivors are scaled by `1 / (1 - p)`, so the expected value is
//! unchanged and evaluation needs no rescaling.
//!
//! ```text
//! out[i] = x[i] * mask[i] / (1 - p)        mask[i] ~ Bernoulli(1 - p)
//! dx[i]  = dout[i] * mask[i] / (1 - p)
//! ```
//! The mask is never stored: `mask[i]` is a hash of `(seed, stream, i)`, so
//! backward recomputes it, and it does not depend on the thread count.

use crate::rng::{hash3, unit_f32};
use rayon::prelude::*;

/// One dropout site in one training step.
#[derive(Clone, Copy, Debug)]
pub struct Dropout {
    pub p: f32,
    pub seed: u64,
    pub stream: u64,
}

impl Dropout {
    /// The factor element `i` is multiplied by: `0` or `1 / (1 - p)`.
    #[inline]
    pub fn factor(&self, i: usize) -> f32 {
        if unit_f32(hash3(self.seed, self.stream, i as u64)) < self.p {
            0.0
        } else {
            1.0 / (1.0 - self.p)
        }
    }

    /// Apply the mask in place. Forward and backward are the same operation
    /// (the mask multiplies the value going forward and the gradient going back).
    pub fn apply(&self, x: &mut [f32]) {
        if self.p == 0.0 {
            return;
        }
        const CHUNK: usize = 4096;
        x.par_chunks_mut(CHUNK).enumerate().for_each(|(k, chunk)| {
            for (j, v) in chunk.iter_mut().enumerate() {
                *v *= self.factor(k * CHUNK + j);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_about_one_minus_p_and_preserves_the_mean() {
        let d = Dropout {
            p: 0.2,
            seed: 1,
            stream: 9,
        };
        let mut x = vec![1.0f32; 100_000];
        d.apply(&mut x);
        let kept = x.iter().filter(|&&v| v != 0.0).count() as f32 / x.len() as f32;
        let mean = x.iter().sum::<f32>() / x.len() as f32;
        assert!((kept - 0.8).abs() < 0.01, "kept {kept}");
        assert!((mean - 1.0).abs() < 0.02, "mean {mean}");
        let mut y = vec![1.0f32; 100_000];
        d.apply(&mut y);
        assert_eq!(x, y, "the mask depends only on (seed, stream, index)");
    }
}
