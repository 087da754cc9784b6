//! Causal multi-head scaled dot-product self-attention.
//!
//! The input is the output of the `c_attn` projection, `qkv: (B, T, 3C)`,
//! laid out `[q | k | v]`; head `h` owns channels `h*hs .. (h+1)*hs` of each
//! part (`hs = C / NH`). For each batch row, head and query position `t`:
//!
//! ```text
//! s[t2] = q[t] . k[t2] / sqrt(hs)               for t2 <= t (causal), else -inf
//! P[t2] = softmax(s)[t2]                        att: (B, NH, T, T), saved for backward
//! out[t] = sum_t2 drop(P)[t2] v[t2]             out: (B, T, C), heads side by side
//!
//! backward, with D = drop(P) and dD[t2] = dout[t] . v[t2]:
//! dv[t2] += D[t2] dout[t]
//! dP[t2]  = dD[t2] * mask[t2] / (1 - p)
//! ds[t2]  = P[t2] (dP[t2] - sum_j P[j] dP[j])   (softmax backward)
//! dq[t]  += sum_t2 ds[t2] k[t2] / sqrt(hs)
//! dk[t2] += ds[t2] q[t] / sqrt(hs)
//! ```
//! Work is split by batch row: each row's keys and values gather gradients
//! from every query of that row only, so rows are independent.

use super::dropout::Dropout;
use crate::backend::cpu::math::{axpy, dot, exp};
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

/// Index of `att[b, h, t1, t2]` within batch row `b`'s block.
#[inline]
fn att_index(h: usize, t1: usize, t2: usize, t: usize) -> usize {
    (h * t + t1) * t + t2
}

/// The dropout factor of `att[b, h, t1, t2]`, or 1 without dropout.
#[inline]
fn drop_factor(dropout: Option<&Dropout>, b: usize, within_row: usize, row_len: usize) -> f32 {
    dropout.map_or(1.0, |d| d.factor(b * row_len + within_row))
}

/// Fills `out: (B, T, C)` and `att: (B, NH, T, T)` (the softmax probabilities, before dropout).
pub fn forward(out: &mut [f32], att: &mut [f32], qkv: &[f32], d: Dims, dropout: Option<&Dropout>) {
    let (t, c, nh, hs) = (d.t, d.c, d.n_head, d.head_size());
    let scale = 1.0 / (hs as f32).sqrt();
    let row_att = nh * t * t;
    out[..d.b * t * c]
        .par_chunks_mut(t * c)
        .zip(att[..d.b * row_att].par_chunks_mut(row_att))
        .zip(qkv[..d.b * t * 3 * c].par_chunks(t * 3 * c))
        .enumerate()
        .for_each(|(b, ((out, att), qkv))| {
            for h in 0..nh {
                for t1 in 0..t {
                    let q = &qkv[t1 * 3 * c + h * hs..][..hs];
                    let probs = &mut att[att_index(h, t1, 0, t)..][..t];
                    let mut max = f32::NEG_INFINITY;
                    for t2 in 0..=t1 {
                        let s = dot(q, &qkv[t2 * 3 * c + c + h * hs..][..hs]) * scale;
                        probs[t2] = s;
                        max = max.max(s);
                    }
                    let mut sum = 0.0;
                    for p in &mut probs[..=t1] {
                        *p = exp(*p - max);
                        sum += *p;
                    }
                    for p in &mut probs[..=t1] {
                        *p /= sum;
                    }
                    probs[t1 + 1..].fill(0.0);
                    let y = &mut out[t1 * c + h * hs..][..hs];
                    y.fill(0.0);
                    for t2 in 0..=t1 {
                        let w =
                            probs[t2] * drop_factor(dropout, b, att_index(h, t1, t2, t), row_att);
                        axpy(y, w, &qkv[t2 * 3 * c + 2 * c + h * hs..][..hs]);
                    }
                }
            }
        });
}

/// Overwrites `dqkv: (B, T, 3C)`. `scratch` holds `B * (T + C)` floats.
pub fn backward(
    dqkv: &mut [f32],
    scratch: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    att: &[f32],
    d: Dims,
    dropout: Option<&Dropout>,
) {
    let (t, c, nh, hs) = (d.t, d.c, d.n_head, d.head_size());
    let scale = 1.0 / (hs as f32).sqrt();
    let row_att = nh * t * t;
    dqkv[..d.b * t * 3 * c]
        .par_chunks_mut(t * 3 * c)
        .zip(scratch[..d.b * (t + c)].par_chunks_mut(t + c))
        .zip(dout[..d.b * t * c].par_chunks(t * c))
        .zip(qkv[..d.b * t * 3 * c].par_chunks(t * 3 * c))
        .zip(att[..d.b * row_att].par_chunks(row_att))
        .enumerate()
        .for_each(|(b, ((((dqkv, scratch), dout), qkv), att))| {
            dqkv.fill(0.0);
            let (dprobs, dq) = scratch.split_at_mut(t);
            let dq = &mut dq[..hs];
            for h in 0..nh {
                for t1 in 0..t {
                    let dy = &dout[t1 * c + h * hs..][..hs];
                    let probs = &att[att_index(h, t1, 0, t)..][..t];
                    // Through `out = D @ v`: gradients of v and of the dropped probabilities.
                    let mut weighted = 0.0; // sum_j P[j] dP[j]
                    for t2 in 0..=t1 {
                        let factor = drop_factor(dropout, b, att_index(h, t1, t2, t), row_att);
                        let v_at = t2 * 3 * c + 2 * c + h * hs;
                        axpy(&mut dqkv[v_at..v_at + hs], probs[t2] * factor, dy);
                        dprobs[t2] = dot(dy, &qkv[v_at..v_at + hs]) * factor;
                        weighted += probs[t2] * dprobs[t2];
                    }
                    // Through the softmax and the scaled dot products.
                    let q = &qkv[t1 * 3 * c + h * hs..][..hs];
                    dq.fill(0.0);
                    for t2 in 0..=t1 {
                        let ds = probs[t2] * (dprobs[t2] - weighted) * scale;
                        let k_at = t2 * 3 * c + c + h * hs;
                        axpy(dq, ds, &qkv[k_at..k_at + hs]);
                        axpy(&mut dqkv[k_at..k_at + hs], ds, q);
                    }
                    let q_at = t1 * 3 * c + h * hs;
                    axpy(&mut dqkv[q_at..q_at + hs], 1.0, dq);
                }
            }
        });
}
