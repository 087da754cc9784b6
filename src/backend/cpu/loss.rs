//! Softmax + cross-entropy, fused.
//!
//! ```text
//! p[v]  = exp(logits[v] - m) / sum_u exp(logits[u] - m)     m = max_u logits[u]
//! loss  = -log p[target] = log sum_u exp(logits[u] - m) + m - logits[target]
//! dlogits[v] = (p[v] - [v == target]) * dloss                logits: (N, V)
//! ```
//! Training never needs the probabilities themselves, so the fused kernel
//! overwrites the logits with their gradient (as llm.c does): one (N, V)
//! buffer instead of three.
//!
//! A target of [`IGNORE_TARGET`] (a prompt token in supervised fine-tuning)
//! has loss 0 and gradient 0, and is left out of the mean.

use super::math::exp;
use super::simd::vectorised;
use crate::backend::IGNORE_TARGET;
use rayon::prelude::*;

/// Per-position losses (`losses: (N)`), logits left unchanged.
pub fn forward(losses: &mut [f32], logits: &[f32], targets: &[u32], v: usize) {
    losses
        .par_iter_mut()
        .zip(logits.par_chunks(v))
        .zip(targets.par_iter())
        .for_each(|((loss, row), &target)| {
            vectorised!({
                if target == IGNORE_TARGET {
                    *loss = 0.0;
                    return;
                }
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let sum: f32 = row.iter().map(|&x| exp(x - max)).sum();
                *loss = sum.ln() + max - row[target as usize];
            })
        });
}

/// Per-position losses, and the logits replaced in place by `dloss * (p - onehot)`.
/// `dloss` is the weight of each position in the total loss (`1 / N` for a mean).
pub fn forward_backward_inplace(
    losses: &mut [f32],
    logits: &mut [f32],
    targets: &[u32],
    v: usize,
    dloss: f32,
) {
    losses
        .par_iter_mut()
        .zip(logits.par_chunks_mut(v))
        .zip(targets.par_iter())
        .for_each(|((loss, row), &target)| {
            vectorised!({
                if target == IGNORE_TARGET {
                    *loss = 0.0;
                    row.fill(0.0);
                    return;
                }
                let target = target as usize;
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let target_logit = row[target] - max;
                let mut sum = 0.0f32;
                for x in row.iter_mut() {
                    *x = exp(*x - max);
                    sum += *x;
                }
                *loss = sum.ln() - target_logit;
                let scale = dloss / sum;
                for x in row.iter_mut() {
                    *x *= scale;
                }
                row[target] -= dloss;
            })
        });
}

/// Mean of the per-position losses of counted targets, summed in a fixed order.
pub fn mean(losses: &[f32], targets: &[u32]) -> f32 {
    let counted = targets.iter().filter(|&&t| t != IGNORE_TARGET).count();
    (losses.iter().map(|&l| l as f64).sum::<f64>() / counted.max(1) as f64) as f32
}
