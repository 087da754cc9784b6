//! Chapter 1: tensors are flat buffers with a shape, and a matrix product
//! is three nested loops.
//!
//! lmforge keeps every tensor as a flat `Vec<f32>` plus its dimensions
//! (llm.c's way): element `(r, c)` of a `rows x cols` matrix sits at
//! `r * cols + c`. A transpose is the same memory read with the strides
//! swapped. Here we multiply two matrices by hand and check the result
//! against the library's kernels: the obviously-correct `matmul_naive` and
//! the fast `matmul` (on the `gemm` crate) that training uses.
//!
//! Run: `cargo run --release --example 01_tensors` (`LMFORGE_TINY=1` for
//! the small size the test suite uses).

#[path = "common/mod.rs"]
mod common;

use lmforge::backend::cpu::matmul::{Accumulate, MatRef, matmul, matmul_naive};

/// A matrix with deterministic "random" entries in [-1, 1).
fn filled(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
    let mut rng = lmforge::rng::Rng::new(seed, 0);
    (0..rows * cols)
        .map(|_| rng.next_f32() * 2.0 - 1.0)
        .collect()
}

/// `out (m, n) = a (m, k) @ b (k, n)`, the textbook way.
fn matmul_by_hand(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            // Row i of a times column j of b.
            let mut sum = 0.0;
            for p in 0..k {
                sum += a[i * k + p] * b[p * n + j];
            }
            out[i * n + j] = sum;
        }
    }
    out
}

fn max_diff(x: &[f32], y: &[f32]) -> f32 {
    x.iter()
        .zip(y)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

fn print_matrix(name: &str, m: &[f32], rows: usize, cols: usize) {
    println!("{name}: shape ({rows}, {cols})");
    for r in 0..rows.min(4) {
        let row: Vec<String> = m[r * cols..][..cols.min(6)]
            .iter()
            .map(|v| format!("{v:7.3}"))
            .collect();
        println!(
            "  [{}{}]",
            row.join(" "),
            if cols > 6 { " ..." } else { "" }
        );
    }
}

/// What the chapter computed: the largest differences between the three products.
pub struct Outcome {
    pub hand_vs_naive: f32,
    pub hand_vs_fast: f32,
    pub transpose_error: f32,
}

pub fn run(tiny: bool) -> Outcome {
    let (m, k, n) = if tiny { (3, 4, 2) } else { (64, 128, 96) };
    let a = filled(m, k, 1);
    let b = filled(k, n, 2);
    print_matrix("a", &a, m, k);
    print_matrix("b", &b, k, n);
    println!("element (1, 2) of a is a[1 * {k} + 2] = {:.3}", a[k + 2]);

    let by_hand = matmul_by_hand(&a, &b, m, k, n);
    print_matrix("a @ b (by hand)", &by_hand, m, n);

    let mut naive = vec![0.0; m * n];
    matmul_naive(
        &mut naive,
        MatRef::new(&a, m, k),
        MatRef::new(&b, k, n),
        Accumulate::Overwrite,
    );
    let mut fast = vec![0.0; m * n];
    matmul(
        &mut fast,
        MatRef::new(&a, m, k),
        MatRef::new(&b, k, n),
        Accumulate::Overwrite,
    );

    // (a @ b)^T = b^T @ a^T: transposed views of the same memory, no copies.
    let mut transposed = vec![0.0; n * m];
    matmul(
        &mut transposed,
        MatRef::new(&b, k, n).t(),
        MatRef::new(&a, m, k).t(),
        Accumulate::Overwrite,
    );
    let back: Vec<f32> = (0..m * n)
        .map(|i| transposed[(i % n) * m + i / n])
        .collect();

    let outcome = Outcome {
        hand_vs_naive: max_diff(&by_hand, &naive),
        hand_vs_fast: max_diff(&by_hand, &fast),
        transpose_error: max_diff(&by_hand, &back),
    };
    println!(
        "max |by hand - matmul_naive| = {:.2e}, |by hand - matmul| = {:.2e}, |(b^T a^T)^T - a b| = {:.2e}",
        outcome.hand_vs_naive, outcome.hand_vs_fast, outcome.transpose_error
    );
    println!("(differences of ~1e-6 are float32 rounding: the sums are added in another order)");
    outcome
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
    fn the_three_products_agree() {
        for tiny in [true, false] {
            let o = super::run(tiny);
            assert!(o.hand_vs_naive < 1e-5 && o.hand_vs_fast < 1e-4 && o.transpose_error < 1e-4);
        }
    }
}
