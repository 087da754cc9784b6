//! Causal multi-head scaled dot-product self-attention.
//!
//! The input is the output of the `c_attn` projection, `qkv: (B, T, 3C)`,
//! laid out `[q | k | v]`; head `h` owns channels `h*hs .. (h+1)*hs` of each
//! part (`hs = C / NH`). For each batch row, head and query position `t`:
//!
//! ```text
//! s[t2] = q[t] . k[t2] / sqrt(hs)               for t2 <= t (causal), else -inf
//! P[t2] = softmax(s)[t2] = exp(s[t2] - lse)     lse = log sum_t2 exp(s[t2]): (B, NH, T), saved
//! out[t] = sum_t2 drop(P)[t2] v[t2]             out: (B, T, C), heads side by side
//!
//! backward, with D = drop(P), per head, as matrices over positions:
//! dV = D^T dY                                  dD = dY V^T
//! dP = dD * mask / (1 - p)
//! dS[t, :] = P[t, :] * (dP[t, :] - sum_j P[t, j] dP[t, j])   (softmax backward)
//! dQ = dS K / sqrt(hs)                         dK = dS^T Q / sqrt(hs)
//! ```
//! Only `lse`, one number per query, is kept for backward, which recomputes
//! `P = exp(Q K^T / sqrt(hs) - lse)`: one more small product instead of
//! storing `(B, NH, T, T)` probabilities per layer (7 GB for GPT-2 at T = 1024).
//! Each head's products are small matrix products on strided views of `qkv`
//! (a head's queries are `T` rows of `hs` floats, `3C` apart), run with `gemm`
//! on one thread; work is split across threads by batch row. The masked upper
//! triangle is computed and then zeroed: twice the arithmetic of a causal
//! loop, but in matrix-product form it is still several times faster.

use super::dropout::Dropout;
use crate::backend::cpu::math::{exp, max, sum_map, sum_map3};
use crate::backend::cpu::matmul::{Accumulate, MatRef, matmul_into};
use rayon::prelude::*;

/// Shapes of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct Dims {
    pub b: usize,
    pub t: usize,
    pub c: usize,
    pub n_head: usize,
}

impl Dims {
    fn head_size(&self) -> usize {
        self.c / self.n_head
    }
}

/// Softmax of the first `t1 + 1` entries of `row` (the positions query `t1`
/// may see); the rest are set to 0. Returns the log-sum-exp of those scores.
fn causal_softmax(row: &mut [f32], t1: usize) -> f32 {
    let (seen, masked) = row.split_at_mut(t1 + 1);
    let max = max(seen);
    seen.iter_mut().for_each(|p| *p = exp(*p - max));
    let sum = sum_map(seen, |p| p);
    let inv = 1.0 / sum;
    seen.iter_mut().for_each(|p| *p *= inv);
    masked.fill(0.0);
    max + sum.ln()
}

/// Scores to probabilities again, from the saved log-sum-exp of each row.
fn causal_probs_from_lse(probs: &mut [f32], lse: &[f32], t: usize) {
    for (t1, (row, &l)) in probs.chunks_exact_mut(t).zip(lse).enumerate() {
        row[..=t1].iter_mut().for_each(|s| *s = exp(*s - l));
        row[t1 + 1..].fill(0.0);
    }
}

/// The attention weights actually applied to `v`: the probabilities, or their
/// dropped-out copy written into `scratch`.
fn dropped<'a>(
    probs: &'a [f32],
    scratch: &'a mut [f32],
    dropout: Option<&Dropout>,
    first_index: usize,
) -> &'a [f32] {
    match dropout {
        None => probs,
        Some(d) => {
            for (i, (w, p)) in scratch.iter_mut().zip(probs).enumerate() {
                *w = p * d.factor(first_index + i);
            }
            &scratch[..probs.len()]
        }
    }
}

/// Fills `out: (B, T, C)` and `lse: (B, NH, T)`. `scratch` holds `B * 3 * T * T` floats.
pub fn forward(
    out: &mut [f32],
    lse: &mut [f32],
    scratch: &mut [f32],
    qkv: &[f32],
    d: Dims,
    dropout: Option<&Dropout>,
) {
    let (t, c, nh, hs) = (d.t, d.c, d.n_head, d.head_size());
    let scale = 1.0 / (hs as f32).sqrt();
    let row_att = nh * t * t;
    out[..d.b * t * c]
        .par_chunks_mut(t * c)
        .zip(lse[..d.b * nh * t].par_chunks_mut(nh * t))
        .zip(scratch[..d.b * 3 * t * t].par_chunks_mut(3 * t * t))
        .zip(qkv[..d.b * t * 3 * c].par_chunks(t * 3 * c))
        .enumerate()
        .for_each(|(b, (((out, lse), scratch), qkv))| {
            let (probs, drop_scratch) = scratch.split_at_mut(t * t);
            for h in 0..nh {
                let q = MatRef::strided(&qkv[h * hs..], t, hs, 3 * c);
                let k = MatRef::strided(&qkv[c + h * hs..], t, hs, 3 * c);
                let v = MatRef::strided(&qkv[2 * c + h * hs..], t, hs, 3 * c);
                matmul_into(probs, t, q, k.t(), Accumulate::Overwrite, scale, false);
                for (t1, row) in probs.chunks_exact_mut(t).enumerate() {
                    lse[h * t + t1] = causal_softmax(row, t1);
                }
                let weights = dropped(probs, drop_scratch, dropout, b * row_att + h * t * t);
                matmul_into(
                    &mut out[h * hs..],
                    c,
                    MatRef::new(weights, t, t),
                    v,
                    Accumulate::Overwrite,
                    1.0,
                    false,
                );
            }
        });
}

/// Overwrites `dqkv: (B, T, 3C)`. `scratch` holds `B * 2 * T * T` floats.
pub fn backward(
    dqkv: &mut [f32],
    scratch: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    lse: &[f32],
    d: Dims,
    dropout: Option<&Dropout>,
) {
    let (t, c, nh, hs) = (d.t, d.c, d.n_head, d.head_size());
    let scale = 1.0 / (hs as f32).sqrt();
    let row_att = nh * t * t;
    dqkv[..d.b * t * 3 * c]
        .par_chunks_mut(t * 3 * c)
        .zip(scratch[..d.b * 3 * t * t].par_chunks_mut(3 * t * t))
        .zip(dout[..d.b * t * c].par_chunks(t * c))
        .zip(qkv[..d.b * t * 3 * c].par_chunks(t * 3 * c))
        .zip(lse[..d.b * nh * t].par_chunks(nh * t))
        .enumerate()
        .for_each(|(b, ((((dqkv, scratch), dout), qkv), lse))| {
            let (probs, rest) = scratch.split_at_mut(t * t);
            let (dp, drop_scratch) = rest.split_at_mut(t * t);
            for h in 0..nh {
                let q = MatRef::strided(&qkv[h * hs..], t, hs, 3 * c);
                let k = MatRef::strided(&qkv[c + h * hs..], t, hs, 3 * c);
                let v = MatRef::strided(&qkv[2 * c + h * hs..], t, hs, 3 * c);
                let dy = MatRef::strided(&dout[h * hs..], t, hs, c);
                matmul_into(probs, t, q, k.t(), Accumulate::Overwrite, scale, false);
                causal_probs_from_lse(probs, &lse[h * t..(h + 1) * t], t);
                let probs = &*probs;
                let first_index = b * row_att + h * t * t;
                let weights = dropped(probs, drop_scratch, dropout, first_index);
                // Through `Y = D V`.
                matmul_into(
                    &mut dqkv[2 * c + h * hs..],
                    3 * c,
                    MatRef::new(weights, t, t).t(),
                    dy,
                    Accumulate::Overwrite,
                    1.0,
                    false,
                );
                matmul_into(dp, t, dy, v.t(), Accumulate::Overwrite, 1.0, false);
                // Through dropout and the softmax, row by row: dp becomes dS.
                for (t1, (ds, p)) in dp
                    .chunks_exact_mut(t)
                    .zip(probs.chunks_exact(t))
                    .enumerate()
                {
                    if let Some(drop) = dropout {
                        for (t2, g) in ds[..=t1].iter_mut().enumerate() {
                            *g *= drop.factor(first_index + t1 * t + t2);
                        }
                    }
                    let weighted = sum_map3(&ds[..=t1], &p[..=t1], p, |g, p, _| g * p);
                    for (g, p) in ds[..=t1].iter_mut().zip(&p[..=t1]) {
                        *g = p * (*g - weighted);
                    }
                    ds[t1 + 1..].fill(0.0);
                }
                // Through `S = Q K^T / sqrt(hs)`.
                let ds = MatRef::new(dp, t, t);
                matmul_into(
                    &mut dqkv[h * hs..],
                    3 * c,
                    ds,
                    k,
                    Accumulate::Overwrite,
                    scale,
                    false,
                );
                matmul_into(
                    &mut dqkv[c + h * hs..],
                    3 * c,
                    ds.t(),
                    q,
                    Accumulate::Overwrite,
                    scale,
                    false,
                );
            }
        });
}
