//! Matrix products with their epilogues, and the bias gradient: the kernels
//! of a linear (fully connected) layer.
//!
//! ```text
//! out = inp @ W + b                 inp: (N, IN)   W: (IN, OUT)   out: (N, OUT)
//! dinp     = dout @ W^T
//! dW      += inp^T @ dout
//! db      += sum_n dout[n, :]
//! ```
//! A feed-forward layer's first linear is followed by an activation, and the
//! gradient flowing back into it passes through the activation's derivative:
//!
//! ```text
//! pre = inp @ W + b,   out = act(pre)              (Epilogue::Activation)
//! dpre = (dout @ W^T) * act'(pre)                  (Epilogue::ActivationGrad)
//! ```
//! For products of at least [`FUSED_ROWS`] rows, each thread applies the
//! activation (or its derivative) to its own block of rows as soon as the
//! product has written them, while they are still in cache; smaller products
//! (decoding one token) run the parallel product first, then the activation.

use super::activation;
use super::matmul::{MatRef, matmul, matmul_into, rows_per_thread};
use super::simd::vectorised;
use crate::backend::{Accumulate, Activation};
use rayon::prelude::*;

/// Products with at least this many rows are split by rows across threads
/// (as [`matmul`] splits them), with the epilogue fused into each block.
pub const FUSED_ROWS: usize = 64;

/// Every row of `dst (m, n)` set to `bias (n)`.
pub fn fill_rows(dst: &mut [f32], bias: &[f32], n: usize) {
    dst.par_chunks_mut(n)
        .for_each(|row| row.copy_from_slice(bias));
}

/// `dst (m, n) = lhs @ rhs + bias`.
pub fn with_bias(dst: &mut [f32], lhs: MatRef, rhs: MatRef, bias: &[f32]) {
    let n = rhs.cols();
    fill_rows(&mut dst[..lhs.rows() * n], bias, n);
    matmul(dst, lhs, rhs, Accumulate::Add);
}

/// `pre (m, n) = lhs @ rhs [+ bias]` and `out = act(pre)`; both are kept
/// (backward needs `pre` for `act'` and `out` for the next layer's weight gradient).
pub fn with_activation(
    pre: &mut [f32],
    out: &mut [f32],
    lhs: MatRef,
    rhs: MatRef,
    bias: Option<&[f32]>,
    act: Activation,
) {
    let (m, n) = (lhs.rows(), rhs.cols());
    let (pre, out) = (&mut pre[..m * n], &mut out[..m * n]);
    if m < FUSED_ROWS {
        match bias {
            Some(bias) => with_bias(pre, lhs, rhs, bias),
            None => matmul(pre, lhs, rhs, Accumulate::Overwrite),
        }
        return activation::forward(out, pre, act);
    }
    let rows = rows_per_thread(m);
    pre.par_chunks_mut(rows * n)
        .zip(out.par_chunks_mut(rows * n))
        .enumerate()
        .for_each(|(block, (pre, out))| {
            let mode = match bias {
                Some(bias) => {
                    pre.chunks_exact_mut(n)
                        .for_each(|row| row.copy_from_slice(bias));
                    Accumulate::Add
                }
                None => Accumulate::Overwrite,
            };
            let lhs = lhs.rows_range(block * rows, pre.len() / n);
            matmul_into(pre, n, lhs, rhs, mode, 1.0, false);
            activation::forward_serial(out, pre, act);
        });
}

/// `dpre (m, n) = (lhs @ rhs) * act'(pre)`.
pub fn with_activation_grad(
    dpre: &mut [f32],
    lhs: MatRef,
    rhs: MatRef,
    pre: &[f32],
    act: Activation,
) {
    let (m, n) = (lhs.rows(), rhs.cols());
    let (dpre, pre) = (&mut dpre[..m * n], &pre[..m * n]);
    if m < FUSED_ROWS {
        matmul(dpre, lhs, rhs, Accumulate::Overwrite);
        return activation::backward_inplace(dpre, pre, act);
    }
    let rows = rows_per_thread(m);
    dpre.par_chunks_mut(rows * n)
        .zip(pre.par_chunks(rows * n))
        .enumerate()
        .for_each(|(block, (dpre, pre))| {
            let lhs = lhs.rows_range(block * rows, dpre.len() / n);
            matmul_into(dpre, n, lhs, rhs, Accumulate::Overwrite, 1.0, false);
            activation::backward_inplace(dpre, pre, act);
        });
}

/// `dbias[j] += sum_i dout[i, j]` over `m` rows of `n`. Split by output
/// column, so every sum runs in a fixed order whatever the thread count.
pub fn bias_backward(dbias: &mut [f32], dout: &[f32], m: usize, n: usize) {
    const COLUMNS: usize = 64;
    dbias[..n]
        .par_chunks_mut(COLUMNS)
        .enumerate()
        .for_each(|(k, db)| {
            vectorised!({
                let c0 = k * COLUMNS;
                for row in dout[..m * n].chunks_exact(n) {
                    for (d, g) in db.iter_mut().zip(&row[c0..]) {
                        *d += g;
                    }
                }
            })
        });
}
