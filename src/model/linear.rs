//! Linear (fully connected) layer.
//!
//! ```text
//! out = inp @ W + b                 inp: (N, IN)   W: (IN, OUT)   out: (N, OUT)
//! dinp     = dout @ W^T
//! dW      += inp^T @ dout
//! db      += sum_n dout[n, :]
//! ```
//! Weights are stored `(IN, OUT)` like Hugging Face's `Conv1D`. The LM head's
//! weight is an embedding-shaped `(OUT, IN)` matrix (`wte` when tied), so each
//! function takes the [`WeightLayout`]; a transposed layout is a transposed
//! view, never a copy.

use crate::backend::cpu::matmul::{Accumulate, MatRef, matmul};
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
    let dout_view = MatRef::new(dout, n, fan_out);
    let inp_view = MatRef::new(inp, n, fan_in);
    matmul(
        &mut dinp[..n * fan_in],
        dout_view,
        weight_view(weight, layout, fan_in, fan_out).t(),
        Accumulate::Overwrite,
    );
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
