//! Chapter 4: one head of self-attention, step by step.
//!
//! Every position asks a question (query), offers a summary (key) and a
//! payload (value). A position's output is the average of the values,
//! weighted by how well its query matches each key, over the positions up
//! to its own (the causal mask: no peeking at the future).
//!
//! ```text
//! q, k, v (T, hs) = x (T, C) @ Wq, Wk, Wv (C, hs)
//! scores (T, T)   = q @ k^T / sqrt(hs)          scaled dot product
//! scores[i][j]    = -inf for j > i              causal mask
//! att (T, T)      = softmax over each row
//! out (T, hs)     = att @ v
//! ```
//!
//! Then the same numbers go through the library's attention kernel
//! (`src/backend/cpu/attention.rs`), which does this for every head of
//! every sequence at once, and we compare.
//!
//! Run: `cargo run --release --example 04_attention_head`.

#[path = "common/mod.rs"]
mod common;

use lmforge::backend::AttentionDims;
use lmforge::backend::cpu::attention;

fn filled(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = lmforge::rng::Rng::new(seed, 4);
    (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
}

/// `(m, k) @ (k, n)`, by hand.
fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for p in 0..k {
            for j in 0..n {
                out[i * n + j] += a[i * k + p] * b[p * n + j];
            }
        }
    }
    out
}

fn show(name: &str, m: &[f32], rows: usize, cols: usize) {
    println!("{name}: ({rows}, {cols})");
    for r in 0..rows.min(6) {
        let row: Vec<String> = m[r * cols..][..cols.min(8)]
            .iter()
            .map(|v| format!("{v:6.2}"))
            .collect();
        println!("  {}", row.join(" "));
    }
}

/// One head by hand: returns `out (T, hs)` and the attention weights.
fn one_head(x: &[f32], w: [&[f32]; 3], t: usize, c: usize, hs: usize) -> (Vec<f32>, Vec<f32>) {
    let q = matmul(x, w[0], t, c, hs);
    let k = matmul(x, w[1], t, c, hs);
    let v = matmul(x, w[2], t, c, hs);
    show("q = x @ Wq", &q, t, hs);
    let scale = 1.0 / (hs as f32).sqrt();
    let mut att = vec![0.0; t * t];
    for i in 0..t {
        for j in 0..t {
            let dot: f32 = (0..hs).map(|d| q[i * hs + d] * k[j * hs + d]).sum();
            att[i * t + j] = if j <= i {
                dot * scale
            } else {
                f32::NEG_INFINITY
            };
        }
    }
    show("scores = q @ k^T / sqrt(hs), masked", &att, t, t);
    for row in att.chunks_mut(t) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        row.iter_mut().for_each(|s| *s = (*s - max).exp());
        let sum: f32 = row.iter().sum();
        row.iter_mut().for_each(|s| *s /= sum);
    }
    show(
        "att = softmax(scores) (each row sums to 1; zeros above the diagonal)",
        &att,
        t,
        t,
    );
    (matmul(&att, &v, t, t, hs), [q, k, v].concat())
}

/// The largest difference between the hand-made head and the kernel's.
pub fn run(tiny: bool) -> f32 {
    let (t, c) = if tiny { (4, 8) } else { (6, 16) };
    let hs = c; // one head: the head size is the whole width
    let x = filled(t * c, 1);
    let (wq, wk, wv) = (filled(c * hs, 2), filled(c * hs, 3), filled(c * hs, 4));
    show("x (one sequence of T tokens, C channels)", &x, t, c);
    let (out, qkv_parts) = one_head(&x, [&wq, &wk, &wv], t, c, hs);
    show("out = att @ v", &out, t, hs);

    // The kernel reads q, k and v side by side in one (B, T, 3C) buffer.
    let mut qkv = vec![0.0; t * 3 * c];
    for pos in 0..t {
        for (part, values) in qkv_parts.chunks(t * hs).enumerate() {
            qkv[pos * 3 * c + part * c..][..hs].copy_from_slice(&values[pos * hs..][..hs]);
        }
    }
    let d = AttentionDims::fused(1, t, 0, c, 1, 1);
    let (mut kernel_out, mut lse) = (vec![0.0; t * c], vec![0.0; t]);
    let mut scratch = vec![0.0; attention::scratch_len(d)];
    attention::forward(
        &mut kernel_out,
        &mut lse,
        &mut scratch,
        (&qkv, &qkv),
        d,
        None,
    );
    let diff = out
        .iter()
        .zip(&kernel_out)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    println!("max |by hand - attention::forward| = {diff:.2e}");
    diff
}

fn main() -> std::process::ExitCode {
    common::main_with(|args| {
        run(args.tiny);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_hand_made_head_matches_the_kernel() {
        assert!(super::run(true) < 1e-5);
        assert!(super::run(false) < 1e-5);
    }
}
