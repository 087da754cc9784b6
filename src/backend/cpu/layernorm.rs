//! Layer normalisation over the channels of each position.
//!
//! ```text
//! mean = sum_c x[c] / C          rstd = 1 / sqrt(sum_c (x[c] - mean)^2 / C + eps)
//! xhat[c] = (x[c] - mean) * rstd
//! out[c]  = xhat[c] * weight[c] + bias[c]                      x, out: (N, C)
//!
//! backward, with g[c] = dout[c] * weight[c]:
//! dx[c]      += rstd * (g[c] - mean_c(g) - xhat[c] * mean_c(g * xhat))
//! dweight[c] += sum_n dout[n, c] * xhat[n, c]
//! dbias[c]   += sum_n dout[n, c]
//! ```
//! Forward saves `mean` and `rstd` (one number each per position) for backward.

use super::math::{sum_map, sum_map3};
use super::simd::vectorised;
use rayon::prelude::*;

/// `inp`, `out`: `(N, C)`; `mean`, `rstd`: `(N)`; `eps` is the model's
/// ([`crate::model::ModelConfig::norm_eps`]).
#[allow(clippy::too_many_arguments)]
pub fn forward(
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    n: usize,
    c: usize,
    eps: f32,
) {
    let (mean, rstd) = (&mut mean[..n], &mut rstd[..n]);
    out[..n * c]
        .par_chunks_mut(c)
        .zip(mean.par_iter_mut().zip(rstd.par_iter_mut()))
        .zip(inp[..n * c].par_chunks(c))
        .for_each(|((o, (m, r)), x)| {
            vectorised!({
                let mu = sum_map(x, |v| v) / c as f32;
                let var = sum_map(x, |v| (v - mu) * (v - mu)) / c as f32;
                let s = 1.0 / (var + eps).sqrt();
                // One loop per case: a bias looked up per element keeps the
                // loop from vectorising.
                let (o, x) = (&mut o[..c], &x[..c]);
                match bias {
                    Some(b) => {
                        o.iter_mut()
                            .zip(x)
                            .zip(weight)
                            .zip(b)
                            .for_each(|(((o, x), w), b)| {
                                *o = (x - mu) * s * w + b;
                            })
                    }
                    None => o.iter_mut().zip(x).zip(weight).for_each(|((o, x), w)| {
                        *o = (x - mu) * s * w;
                    }),
                }
                *m = mu;
                *r = s;
            })
        });
}

/// Accumulates into `dinp` (it is a residual stream's gradient), `dweight` and
/// `dbias`; a frozen norm (`dweight = None`) only passes its gradient on.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    dinp: &mut [f32],
    dweight: Option<&mut [f32]>,
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    mean: &[f32],
    rstd: &[f32],
    n: usize,
    c: usize,
) {
    let (mean, rstd) = (&mean[..n], &rstd[..n]);
    dinp[..n * c]
        .par_chunks_mut(c)
        .zip(dout[..n * c].par_chunks(c))
        .zip(inp[..n * c].par_chunks(c))
        .zip(mean.par_iter().zip(rstd.par_iter()))
        .for_each(|(((dx, dy), x), (&mu, &s))| {
            vectorised!({
                let mean_g = sum_map3(dy, weight, x, |d, w, _| d * w) / c as f32;
                let mean_gx = sum_map3(dy, weight, x, |d, w, v| d * w * (v - mu) * s) / c as f32;
                for i in 0..c {
                    let xhat = (x[i] - mu) * s;
                    dx[i] += s * (dy[i] * weight[i] - mean_g - xhat * mean_gx);
                }
            })
        });
    // Parameter gradients reduce over positions: split by channel instead, so
    // each sum runs in a fixed order whatever the thread count.
    const CHANNELS: usize = 16;
    let column_sums = |c0: usize, dw: &mut [f32], mut db: Option<&mut [f32]>| {
        vectorised!({
            let width = dw.len();
            let (mut sum_w, mut sum_b) = ([0.0f32; CHANNELS], [0.0f32; CHANNELS]);
            for row in 0..n {
                let (mu, s) = (mean[row], rstd[row]);
                let dy = &dout[row * c + c0..][..width];
                let x = &inp[row * c + c0..][..width];
                for j in 0..width {
                    sum_w[j] += dy[j] * (x[j] - mu) * s;
                    sum_b[j] += dy[j];
                }
            }
            dw.iter_mut().zip(&sum_w).for_each(|(d, s)| *d += s);
            if let Some(db) = db.as_deref_mut() {
                db.iter_mut().zip(&sum_b).for_each(|(d, s)| *d += s);
            }
        })
    };
    let Some(dweight) = dweight else { return };
    match dbias {
        Some(dbias) => dweight
            .par_chunks_mut(CHANNELS)
            .zip(dbias.par_chunks_mut(CHANNELS))
            .enumerate()
            .for_each(|(k, (dw, db))| column_sums(k * CHANNELS, dw, Some(db))),
        None => dweight
            .par_chunks_mut(CHANNELS)
            .enumerate()
            .for_each(|(k, dw)| column_sums(k * CHANNELS, dw, None)),
    }
}
