//! The gated feed-forward non-linearity of Llama-family models (SwiGLU,
//! Shazeer 2020): the up-projection is two projections side by side, and
//! one gates the other through SiLU.
//!
//! ```text
//! fc = x @ [W_gate | W_up]              (N, 2I): gate = fc[:, :I], up = fc[:, I:]
//! out = silu(gate) * up                 (N, I), then down_proj(out)
//! silu(g) = g * sigmoid(g)              silu'(g) = sigmoid(g) * (1 + g * (1 - sigmoid(g)))
//!
//! backward, from dout (N, I):
//! dgate = dout * up * silu'(gate)       dup = dout * silu(gate)      -> dfc (N, 2I)
//! ```
//! Forward keeps `fc` (the gate and up pre-activations) for backward.

use super::activation::{silu, silu_grad};
use super::simd::vectorised;
use rayon::prelude::*;

/// `out (n, i) = silu(fc[:, :i]) * fc[:, i:]`.
pub fn forward(out: &mut [f32], fc: &[f32], n: usize, i: usize) {
    out[..n * i]
        .par_chunks_mut(i)
        .zip(fc[..n * 2 * i].par_chunks(2 * i))
        .for_each(|(o, fc)| {
            vectorised!({
                let (gate, up) = fc.split_at(i);
                for j in 0..i {
                    o[j] = silu(gate[j]) * up[j];
                }
            })
        });
}

/// Overwrites `dfc (n, 2i)` from `dout (n, i)` and the saved `fc`.
pub fn backward(dfc: &mut [f32], dout: &[f32], fc: &[f32], n: usize, i: usize) {
    dfc[..n * 2 * i]
        .par_chunks_mut(2 * i)
        .zip(dout[..n * i].par_chunks(i))
        .zip(fc[..n * 2 * i].par_chunks(2 * i))
        .for_each(|((dfc, dy), fc)| {
            vectorised!({
                let (gate, up) = fc.split_at(i);
                let (dgate, dup) = dfc.split_at_mut(i);
                for j in 0..i {
                    dgate[j] = dy[j] * up[j] * silu_grad(gate[j]);
                    dup[j] = dy[j] * silu(gate[j]);
                }
            })
        });
}
