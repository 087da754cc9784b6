//! AdamW (Loshchilov & Hutter), as `torch.optim.AdamW`, in one pass over the
//! parameters, with gradient-norm clipping folded in.
//!
//! For step `t` (from 1), gradient `g` already multiplied by the clip factor:
//! ```text
//! p = p - lr * wd * p                          (decoupled decay; matrices only)
//! m = beta1 m + (1 - beta1) g
//! v = beta2 v + (1 - beta2) g^2
//! p = p - lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
//! ```
//! Clipping (as `torch.nn.utils.clip_grad_norm_`): with `norm = ||g||_2` over
//! all parameters, gradients are scaled by `min(1, clip / (norm + 1e-6))`.

use super::super::model::TensorSpec;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

/// Optimizer state: the two moments (same layout as the parameters) and the step count.
pub struct AdamW {
    pub config: AdamWConfig,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    /// Number of updates applied so far.
    pub step: u64,
    /// Each tensor's range and whether weight decay applies to it.
    groups: Vec<(Range<usize>, bool)>,
    partial_sums: Vec<f64>,
}

const CHUNK: usize = 1 << 14;

impl AdamW {
    pub fn new(config: AdamWConfig, tensors: &[TensorSpec]) -> Self {
        let total = tensors.iter().map(|t| t.range.end).max().unwrap_or(0);
        AdamW {
            config,
            m: vec![0.0; total],
            v: vec![0.0; total],
            step: 0,
            groups: tensors
                .iter()
                .map(|t| (t.range.clone(), t.decays()))
                .collect(),
            partial_sums: Vec::with_capacity(total.div_ceil(CHUNK)),
        }
    }

    /// The L2 norm of all gradients, summed in a fixed order (deterministic
    /// whatever the thread count).
    pub fn grad_norm(&mut self, grads: &[f32]) -> f32 {
        grads
            .par_chunks(CHUNK)
            .map(sum_of_squares)
            .collect_into_vec(&mut self.partial_sums);
        self.partial_sums.iter().sum::<f64>().sqrt() as f32
    }

    /// One update with learning rate `lr`. If `grad_clip > 0`, gradients are
    /// first scaled so their norm is at most `grad_clip`. Returns the gradient
    /// norm before clipping.
    pub fn update(&mut self, params: &mut [f32], grads: &[f32], lr: f32, grad_clip: f32) -> f32 {
        let norm = self.grad_norm(grads);
        let scale = if grad_clip > 0.0 {
            (grad_clip / (norm + 1e-6)).min(1.0)
        } else {
            1.0
        };
        self.step += 1;
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.config;
        let bias1 = 1.0 - beta1.powi(self.step as i32);
        let bias2_sqrt = (1.0 - beta2.powi(self.step as i32)).sqrt();
        let groups = &self.groups;
        // One pass over all parameters; each chunk updates the parts of the
        // tensors it overlaps, with that tensor's weight decay.
        params
            .par_chunks_mut(CHUNK)
            .zip(grads.par_chunks(CHUNK))
            .zip(self.m.par_chunks_mut(CHUNK))
            .zip(self.v.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(chunk, (((p, g), m), v))| {
                let (start, end) = (chunk * CHUNK, chunk * CHUNK + p.len());
                for (range, decays) in groups {
                    let (lo, hi) = (range.start.max(start), range.end.min(end));
                    if lo >= hi {
                        continue;
                    }
                    let decay = if *decays { lr * weight_decay } else { 0.0 };
                    let part = lo - start..hi - start;
                    let (p, g) = (&mut p[part.clone()], &g[part.clone()]);
                    let (m, v) = (&mut m[part.clone()], &mut v[part]);
                    // Zipped iterators, not indices: no bounds checks, so the loop vectorises.
                    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m).zip(v) {
                        let g = g * scale;
                        *m = beta1 * *m + (1.0 - beta1) * g;
                        *v = beta2 * *v + (1.0 - beta2) * g * g;
                        let denom = v.sqrt() / bias2_sqrt + eps;
                        *p -= decay * *p + lr * (*m / bias1) / denom;
                    }
                }
            });
        norm
    }
}

/// `sum g^2` in f64, in eight interleaved partial sums so the loop vectorises
/// (a fixed order: the same gradients give the same norm on any thread count).
fn sum_of_squares(grads: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let chunks = grads.chunks_exact(8);
    let tail: f64 = chunks
        .remainder()
        .iter()
        .map(|&g| g as f64 * g as f64)
        .sum();
    for c in chunks {
        for k in 0..8 {
            lanes[k] += c[k] as f64 * c[k] as f64;
        }
    }
    lanes.iter().sum::<f64>() + tail
}
