//! Rotary position embeddings (RoPE, Su et al. 2021), as Hugging Face's
//! Llama applies them: channel `i` of a head is paired with channel
//! `i + hs/2` (`rotate_half`), and the pair is turned by the angle
//! `pos * inv_freq[i]`.
//!
//! ```text
//! for each row (position p), head, and i < hs/2, with (c, s) = (cos, sin)(p * inv_freq[i]):
//!   x1 = x[i], x2 = x[i + hs/2]
//!   out[i]        = x1 * c - x2 * s
//!   out[i + hs/2] = x2 * c + x1 * s
//!
//! backward (a rotation's inverse is its transpose, the turn by -angle):
//!   dx1 =  dout1 * c + dout2 * s
//!   dx2 = -dout1 * s + dout2 * c
//! ```
//! Applied in place to the query and key heads of the `qkv` projection
//! (`heads` = query heads + key heads, side by side from column 0 of each
//! row); values are not rotated. `table` holds `(cos, sin)` pairs for every
//! position and frequency: `table[(p * hs/2 + i) * 2 .. + 2]`, computed once
//! from `rope_theta` and `rope_scaling` (see `model/rope.rs`). Backward needs
//! nothing saved: the angles depend on positions only.

use super::simd::vectorised;
use crate::backend::RopeDims;
use rayon::prelude::*;

/// Turn each pair by `+angle` (`sign = 1`) or `-angle` (`sign = -1`).
fn rotate(x: &mut [f32], table: &[f32], d: RopeDims, sign: f32) {
    let half = d.head_size / 2;
    x[..d.rows * d.row_stride]
        .par_chunks_mut(d.row_stride)
        .enumerate()
        .for_each(|(r, row)| {
            vectorised!({
                let p = d.pos + r % d.t;
                let angles = &table[p * half * 2..(p + 1) * half * 2];
                for head in row[..d.heads * d.head_size].chunks_exact_mut(d.head_size) {
                    let (x1, x2) = head.split_at_mut(half);
                    for i in 0..half {
                        let (c, s) = (angles[2 * i], sign * angles[2 * i + 1]);
                        let (a, b) = (x1[i], x2[i]);
                        x1[i] = a * c - b * s;
                        x2[i] = b * c + a * s;
                    }
                }
            })
        });
}

/// Rotate the first `d.heads` heads of each row of `x`, in place.
pub fn forward(x: &mut [f32], table: &[f32], d: RopeDims) {
    rotate(x, table, d, 1.0);
}

/// Overwrite the gradient of the rotated heads (in place) with the gradient
/// of the unrotated ones.
pub fn backward(dx: &mut [f32], table: &[f32], d: RopeDims) {
    rotate(dx, table, d, -1.0);
}
