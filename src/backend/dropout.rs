//! Dropout (inverted): during training each value is zeroed with probability
//! `p` and the survivors are scaled by `1 / (1 - p)`, so the expected value is
//! unchanged and evaluation needs no rescaling.
//!
//! ```text
//! out[i] = x[i] * mask[i] / (1 - p)        mask[i] ~ Bernoulli(1 - p)
//! dx[i]  = dout[i] * mask[i] / (1 - p)
//! ```
//! The mask is never stored: `mask[i]` is a hash of `(seed, stream, i)`, so
//! backward recomputes it, it does not depend on the thread count, and every
//! backend draws the same masks.

use crate::rng::{hash3, unit_f32};

/// One dropout site in one training step.
#[derive(Clone, Copy, Debug, PartialEq)]
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
}
