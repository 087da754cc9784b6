//! Matrix products on strided views, through the `gemm` crate.
//!
//! `dst (m, n) = [dst +] lhs (m, k) @ rhs (k, n)`. A view carries row and
//! column strides, so a transposed operand (`W^T`, `X^T`) is the same memory
//! read with swapped strides: no transposed copies are ever made.
//!
//! `gemm`'s own scalars read the reverse of BLAS: it computes
//! `dst = alpha * dst + beta * lhs @ rhs`, reading `dst` only if `read_dst`.

/// A read-only matrix view over a slice.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// The first `rows * cols` elements of `data`, row-major.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        assert!(
            data.len() >= rows * cols,
            "matrix view out of bounds: {} < {rows}x{cols}",
            data.len()
        );
        MatRef {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose, as a view of the same memory.
    pub fn t(self) -> Self {
        MatRef {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }

    fn at(&self, r: usize, c: usize) -> f32 {
        self.data[r * self.row_stride + c * self.col_stride]
    }
}

/// Whether the product overwrites the destination or is added to it
/// (gradients accumulate across micro-batches, so weight gradients add).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Accumulate {
    Overwrite,
    Add,
}

/// `dst (m, n) = lhs @ rhs`, or `dst += lhs @ rhs`; `dst` is row-major.
pub fn matmul(dst: &mut [f32], lhs: MatRef, rhs: MatRef, mode: Accumulate) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(rhs.rows, k, "matmul: inner dimensions differ");
    assert!(dst.len() >= m * n, "matmul: destination too small");
    if m == 0 || n == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    // Small products run on one thread: splitting them costs more than it saves.
    let parallelism = if threads > 1 && m * n * k >= 64 * 64 * 64 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above and in `MatRef::new` keep every index gemm
    // computes from these dimensions and strides inside the three slices, and
    // `dst` is borrowed mutably, so it cannot alias `lhs` or `rhs`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            mode == Accumulate::Add,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The obviously-correct twin of [`matmul`], used to test it.
pub fn matmul_naive(dst: &mut [f32], lhs: MatRef, rhs: MatRef, mode: Accumulate) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    for i in 0..m {
        for j in 0..n {
            let mut sum = 0.0f64;
            for p in 0..k {
                sum += lhs.at(i, p) as f64 * rhs.at(p, j) as f64;
            }
            let d = &mut dst[i * n + j];
            *d = if mode == Accumulate::Add {
                *d + sum as f32
            } else {
                sum as f32
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed, 0);
        (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
    }

    #[test]
    fn matches_naive_for_every_transpose_and_mode() {
        let (m, k, n) = (37, 70, 29);
        let a = random(m * k, 1);
        let at = random(k * m, 2);
        let b = random(k * n, 3);
        let bt = random(n * k, 4);
        let start = random(m * n, 5);
        for (lhs, rhs) in [
            (MatRef::new(&a, m, k), MatRef::new(&b, k, n)),
            (MatRef::new(&at, k, m).t(), MatRef::new(&b, k, n)),
            (MatRef::new(&a, m, k), MatRef::new(&bt, n, k).t()),
            (MatRef::new(&at, k, m).t(), MatRef::new(&bt, n, k).t()),
        ] {
            for mode in [Accumulate::Overwrite, Accumulate::Add] {
                let mut fast = start.clone();
                let mut slow = start.clone();
                matmul(&mut fast, lhs, rhs, mode);
                matmul_naive(&mut slow, lhs, rhs, mode);
                let worst = fast
                    .iter()
                    .zip(&slow)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0, f32::max);
                assert!(worst < 1e-4, "{mode:?}: max diff {worst}");
            }
        }
    }
}
