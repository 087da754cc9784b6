//! RMS normalisation over the channels of each position (Llama, Qwen2, Mistral).
//!
//! ```text
//! rstd = 1 / sqrt(sum_c x[c]^2 / C + eps)       (no mean is subtracted, no bias)
//! xhat[c] = x[c] * rstd
//! out[c]  = xhat[c] * weight[c]                 x, out: (N, C); rstd: (N), saved
//!
//! backward, with g[c] = dout[c] * weight[c]:
//! dx[c]      += rstd * (g[c] - xhat[c] * mean_c(g * xhat))
//! dweight[c] += sum_n dout[n, c] * xhat[n, c]
//! ```
//! (layer norm's backward without its `mean_c(g)` term, as the mean is not
//! subtracted). `eps` is the model's `rms_norm_eps` (1e-5 for Llama and
//! SmolLM, 1e-6 for Qwen2).

use super::math::{sum_map, sum_map3};
use super::simd::vectorised;
use rayon::prelude::*;

/// `inp`, `out`: `(N, C)`; `rstd`: `(N)`.
pub fn forward(
    out: &mut [f32],
    rstd: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    (n, c, eps): (usize, usize, f32),
) {
    out[..n * c]
        .par_chunks_mut(c)
        .zip(rstd[..n].par_iter_mut())
        .zip(inp[..n * c].par_chunks(c))
        .for_each(|((o, r), x)| {
            vectorised!({
                let s = 1.0 / (sum_map(x, |v| v * v) / c as f32 + eps).sqrt();
                for i in 0..c {
                    o[i] = x[i] * s * weight[i];
                }
                *r = s;
            })
        });
}

/// Accumulates into `dinp` (a residual stream's gradient) and `dweight`
/// (`None` for a frozen norm, which only passes its gradient on).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    dinp: &mut [f32],
    dweight: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    rstd: &[f32],
    n: usize,
    c: usize,
) {
    let rstd = &rstd[..n];
    dinp[..n * c]
        .par_chunks_mut(c)
        .zip(dout[..n * c].par_chunks(c))
        .zip(inp[..n * c].par_chunks(c))
        .zip(rstd.par_iter())
        .for_each(|(((dx, dy), x), &s)| {
            vectorised!({
                let mean_gx = sum_map3(dy, weight, x, |d, w, v| d * w * v * s) / c as f32;
                for i in 0..c {
                    dx[i] += s * (dy[i] * weight[i] - x[i] * s * mean_gx);
                }
            })
        });
    // The gain's gradient reduces over positions: split by channel, so each
    // sum runs in a fixed order whatever the thread count.
    const CHANNELS: usize = 16;
    let Some(dweight) = dweight else { return };
    dweight
        .par_chunks_mut(CHANNELS)
        .enumerate()
        .for_each(|(k, dw)| {
            vectorised!({
                let (c0, width) = (k * CHANNELS, dw.len());
                let mut sums = [0.0f32; CHANNELS];
                for (row, &s) in rstd.iter().enumerate() {
                    let dy = &dout[row * c + c0..][..width];
                    let x = &inp[row * c + c0..][..width];
                    for j in 0..width {
                        sums[j] += dy[j] * x[j] * s;
                    }
                }
                dw.iter_mut().zip(&sums).for_each(|(d, s)| *d += s);
            })
        });
}
