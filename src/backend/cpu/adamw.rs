//! The AdamW update kernel (Loshchilov & Hutter), as `torch.optim.AdamW`, in
//! one pass over the parameters, with gradient-norm clipping folded in (the
//! optimizer's state and settings live in [`crate::optim`]).
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
//!
//! A gradient holding a NaN or an infinity (a non-finite norm) updates
//! nothing: one bad batch must not turn every weight and moment into NaN.
//! The norm is returned, and the training loop stops or drops the step.

use super::simd::vectorised;
use crate::backend::{AdamWStep, ParamGroup};
use rayon::prelude::*;

use crate::backend::NORM_CHUNK as CHUNK;

/// `partials[i]`: the sum of squares of chunk `i` of `grads`.
pub fn sum_of_squares_by_chunk(grads: &[f32], partials: &mut [f64]) {
    grads
        .par_chunks(CHUNK)
        .zip(partials.par_iter_mut())
        .for_each(|(chunk, partial)| *partial = sum_of_squares(chunk));
}

/// One update of `params` (moments `m`, `v`) with the settings of `s`,
/// clipping by `norm` (the norm of all gradients); a non-finite `norm` updates nothing.
pub fn update(
    params: &mut [f32],
    grads: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    groups: &[ParamGroup],
    s: AdamWStep,
    norm: f32,
) {
    if !norm.is_finite() {
        return;
    }
    let scale = if s.grad_clip > 0.0 {
        (s.grad_clip / (norm + 1e-6)).min(1.0)
    } else {
        1.0
    };
    let (beta1, beta2, eps, lr) = (s.beta1, s.beta2, s.eps, s.lr);
    let bias1 = 1.0 - beta1.powi(s.t as i32);
    let bias2_sqrt = (1.0 - beta2.powi(s.t as i32)).sqrt();
    // One pass over all parameters; each chunk updates the parts of the
    // tensors it overlaps, with that tensor's weight decay.
    params
        .par_chunks_mut(CHUNK)
        .zip(grads.par_chunks(CHUNK))
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(chunk, (((p, g), m), v))| {
            vectorised!({
                let (start, end) = (chunk * CHUNK, chunk * CHUNK + p.len());
                for group in groups {
                    let (lo, hi) = (group.range.start.max(start), group.range.end.min(end));
                    if lo >= hi {
                        continue;
                    }
                    let decay = if group.decays {
                        lr * s.weight_decay
                    } else {
                        0.0
                    };
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
            })
        });
}

/// `sum g^2` in f64, in eight interleaved partial sums so the loop vectorises
/// (a fixed order: the same gradients give the same norm on any thread count).
fn sum_of_squares(grads: &[f32]) -> f64 {
    vectorised!({
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::norm_of;

    fn step() -> AdamWStep {
        AdamWStep {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.1,
            grad_clip: 1.0,
            t: 1,
        }
    }

    #[test]
    fn a_non_finite_gradient_updates_nothing() {
        let groups = [ParamGroup {
            range: 0..3,
            decays: true,
        }];
        let (mut p, mut m, mut v) = (vec![1.0, 2.0, 3.0], vec![0.5; 3], vec![0.25; 3]);
        for bad in [f32::NAN, f32::INFINITY] {
            let g = [0.1, bad, 0.3];
            let norm = norm_of(&partials_of(&g));
            assert!(!norm.is_finite());
            update(&mut p, &g, &mut m, &mut v, &groups, step(), norm);
            assert_eq!(
                (&p[..], &m[..], &v[..]),
                (&[1.0, 2.0, 3.0][..], &[0.5; 3][..], &[0.25; 3][..])
            );
        }
        let g = [0.1, 0.2, 0.3];
        let norm = norm_of(&partials_of(&g));
        update(&mut p, &g, &mut m, &mut v, &groups, step(), norm);
        assert!(norm.is_finite() && p[0] != 1.0, "a finite gradient updates");
    }

    fn partials_of(g: &[f32]) -> Vec<f64> {
        let mut partials = vec![0.0; g.len().div_ceil(CHUNK)];
        sum_of_squares_by_chunk(g, &mut partials);
        partials
    }

    #[test]
    fn chunk_partials_add_up_to_the_norm_whatever_the_split() {
        let g: Vec<f32> = (0..3 * CHUNK + 17)
            .map(|i| ((i % 97) as f32 - 48.0) * 1e-3)
            .collect();
        let whole = partials_of(&g);
        // Two "ranks" owning whole chunks: the same partials, the same norm bits.
        let (a, b) = g.split_at(2 * CHUNK);
        let split: Vec<f64> = partials_of(a).into_iter().chain(partials_of(b)).collect();
        assert_eq!(whole, split);
        let direct = g.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt() as f32;
        assert!((norm_of(&whole) - direct).abs() <= 1e-6 * direct);
    }
}
