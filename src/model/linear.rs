//! Linear (fully connected) layer.
//!
//! ```text
//! out = inp @ W + b                 inp: (N, IN)   W: (IN, OUT)   out: (N, OUT)
//! dinp     = dout @ W^T
//! dW      += inp^T @ dout
//! db      += sum_n dout[n, :]
//! ```
//! A feed-forward layer's first linear is followed by an activation:
//! [`forward_activated`] and [`backward_through_activation`] apply it (or its
//! derivative) to each thread's block of rows as soon as the product has
//! written them, while they are still in cache:
//!
//! ```text
//! pre = inp @ W + b,   out = act(pre)
//! dpre = (dout @ W^T) * act'(pre)          (for the linear that reads act(pre))
//! ```
//! Weights are stored `(IN, OUT)` like Hugging Face's `Conv1D`. The LM head's
//! weight is an embedding-shaped `(OUT, IN)` matrix (`wte` when tied), so each
//! function takes the [`WeightLayout`]; a transposed layout is a transposed
//! view, never a copy.

use super::activation;
use super::config::Activation;
use crate::backend::cpu::matmul::{Accumulate, MatRef, matmul, matmul_into, rows_per_thread};
use rayon::prelude::*;

/// How the weight matrix is stored.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WeightLayout {
    /// `(IN, OUT)`: transformer-block linears (Hugging Face `Conv1D`).
    InOut,
    /// `(OUT, IN)`: the LM head (`nn.Linear`, or the tied token embedding).
    OutIn,
}

fn weight_view(weight: &[f32], layout: WeightLayout, fan_in: usize, fan_out: usize) -> MatRef<'_> {
    match layout {
        WeightLayout::InOut => MatRef::new(weight, fan_in, fan_out),
        WeightLayout::OutIn => MatRef::new(weight, fan_out, fan_in).t(),
    }
}

/// `out (N, OUT) = inp (N, IN) @ W + b`.
pub fn forward(
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    layout: WeightLayout,
    n: usize,
    fan_in: usize,
    fan_out: usize,
) {
    let out = &mut out[..n * fan_out];
    let mode = match bias {
        Some(bias) => {
            out.par_chunks_mut(fan_out)
                .for_each(|row| row.copy_from_slice(bias));
            Accumulate::Add
        }
        None => Accumulate::Overwrite,
    };
    matmul(
        out,
        MatRef::new(inp, n, fan_in),
        weight_view(weight, layout, fan_in, fan_out),
        mode,
    );
}

/// `pre (N, OUT) = inp @ W + b` and `out = act(pre)`; both are kept (backward
/// needs `pre` for `act'` and `out` for the next layer's weight gradient).
#[allow(clippy::too_many_arguments)]
pub fn forward_activated(
    pre: &mut [f32],
    out: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    layout: WeightLayout,
    n: usize,
    fan_in: usize,
    fan_out: usize,
    act: Activation,
) {
    let inp = MatRef::new(inp, n, fan_in);
    let weight = weight_view(weight, layout, fan_in, fan_out);
    let rows = rows_per_thread(n);
    pre[..n * fan_out]
        .par_chunks_mut(rows * fan_out)
        .zip(out[..n * fan_out].par_chunks_mut(rows * fan_out))
        .enumerate()
        .for_each(|(block, (pre, out))| {
            let mode = match bias {
                Some(bias) => {
                    pre.chunks_exact_mut(fan_out)
                        .for_each(|row| row.copy_from_slice(bias));
                    Accumulate::Add
                }
                None => Accumulate::Overwrite,
            };
            let inp = inp.rows(block * rows, pre.len() / fan_out);
            matmul_into(pre, fan_out, inp, weight, mode, 1.0, false);
            activation::forward_serial(out, pre, act);
        });
}

/// Overwrites `dinp`; accumulates into `dweight` and `dbias`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    dinp: &mut [f32],
    dweight: &mut [f32],
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    layout: WeightLayout,
    n: usize,
    fan_in: usize,
    fan_out: usize,
) {
    let dinp_view = weight_view(weight, layout, fan_in, fan_out).t();
    matmul(
        &mut dinp[..n * fan_in],
        MatRef::new(dout, n, fan_out),
        dinp_view,
        Accumulate::Overwrite,
    );
    weight_and_bias_grads(dweight, dbias, dout, inp, layout, n, fan_in, fan_out);
}

/// [`backward`] of a linear whose input is `inp = act(pre)` (see
/// [`forward_activated`]): overwrites `dpre` with the gradient of `pre`.
#[allow(clippy::too_many_arguments)]
pub fn backward_through_activation(
    dpre: &mut [f32],
    dweight: &mut [f32],
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    pre: &[f32],
    act: Activation,
    weight: &[f32],
    layout: WeightLayout,
    n: usize,
    fan_in: usize,
    fan_out: usize,
) {
    let dout_view = MatRef::new(dout, n, fan_out);
    let weight_t = weight_view(weight, layout, fan_in, fan_out).t();
    let rows = rows_per_thread(n);
    dpre[..n * fan_in]
        .par_chunks_mut(rows * fan_in)
        .zip(pre[..n * fan_in].par_chunks(rows * fan_in))
        .enumerate()
        .for_each(|(block, (dpre, pre))| {
            let dout = dout_view.rows(block * rows, dpre.len() / fan_in);
            matmul_into(
                dpre,
                fan_in,
                dout,
                weight_t,
                Accumulate::Overwrite,
                1.0,
                false,
            );
            activation::backward_inplace(dpre, pre, act);
        });
    weight_and_bias_grads(dweight, dbias, dout, inp, layout, n, fan_in, fan_out);
}

/// `dW += inp^T @ dout` and `db += sum_n dout[n, :]`.
#[allow(clippy::too_many_arguments)]
fn weight_and_bias_grads(
    dweight: &mut [f32],
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    layout: WeightLayout,
    n: usize,
    fan_in: usize,
    fan_out: usize,
) {
    let dout_view = MatRef::new(dout, n, fan_out);
    let inp_view = MatRef::new(inp, n, fan_in);
    match layout {
        WeightLayout::InOut => matmul(dweight, inp_view.t(), dout_view, Accumulate::Add),
        WeightLayout::OutIn => matmul(dweight, dout_view.t(), inp_view, Accumulate::Add),
    }
    if let Some(dbias) = dbias {
        // Split by output column so every sum runs in a fixed order.
        const COLUMNS: usize = 64;
        dbias
            .par_chunks_mut(COLUMNS)
            .enumerate()
            .for_each(|(k, db)| {
                let c0 = k * COLUMNS;
                for row in dout[..n * fan_out].chunks_exact(fan_out) {
                    for (d, g) in db.iter_mut().zip(&row[c0..]) {
                        *d += g;
                    }
                }
            });
    }
}
