//! Token + position embedding.
//!
//! ```text
//! out[b, t, :] = wte[idx[b, t], :] + wpe[pos + t, :]  out: (B, T, C)
//! dwte[idx[b, t], :] += dout[b, t, :]                 wte: (V, C)
//! dwpe[t, :]         += sum_b dout[b, t, :]           wpe: (block_size, C)
//! ```
//! The bigram model is the same lookup with no position table and `C = V`:
//! the row it reads is the logits. `pos` is the position of the first id
//! (0 in training; the length of the cached context when decoding).

use super::simd::vectorised;

/// `idx` is `(B, T)` flattened; `wpe` is `None` for the bigram model.
pub fn forward(
    out: &mut [f32],
    idx: &[u32],
    wte: &[f32],
    wpe: Option<&[f32]>,
    pos: usize,
    t: usize,
    c: usize,
) {
    vectorised!({
        for (n, (row, &token)) in out.chunks_exact_mut(c).zip(idx).enumerate() {
            let token = token as usize;
            row.copy_from_slice(&wte[token * c..(token + 1) * c]);
            if let Some(wpe) = wpe {
                let pos = pos + n % t;
                for (o, p) in row.iter_mut().zip(&wpe[pos * c..(pos + 1) * c]) {
                    *o += p;
                }
            }
        }
    })
}

/// Gradients accumulate (`+=`) into `dwte` and `dwpe`. A token that occurs
/// several times gathers one contribution per occurrence.
pub fn backward(
    dwte: &mut [f32],
    mut dwpe: Option<&mut [f32]>,
    dout: &[f32],
    idx: &[u32],
    t: usize,
    c: usize,
) {
    vectorised!({
        for (row, &token) in dout.chunks_exact(c).zip(idx) {
            let token = token as usize;
            for (d, g) in dwte[token * c..(token + 1) * c].iter_mut().zip(row) {
                *d += g;
            }
        }
        if let Some(dwpe) = dwpe.as_deref_mut() {
            for (n, row) in dout.chunks_exact(c).enumerate() {
                let pos = n % t;
                for (d, g) in dwpe[pos * c..(pos + 1) * c].iter_mut().zip(row) {
                    *d += g;
                }
            }
        }
    })
}
