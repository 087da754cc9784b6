//! Matrix products on strided views, through the `gemm` crate.
//!
//! `dst (m, n) = [dst +] lhs (m, k) @ rhs (k, n)`. A view carries row and
//! column strides, so a transposed operand (`W^T`, `X^T`) is the same memory
//! read with swapped strides: no transposed copies are ever made.
//!
//! `gemm`'s own scalars read the reverse of BLAS: it computes
//! `dst = alpha * dst + beta * lhs @ rhs`, reading `dst` only if `read_dst`.

use super::few_rows;
pub use crate::backend::Accumulate;
use crate::backend::Mat;
use rayon::prelude::*;

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

    /// `rows x cols` elements whose rows start `row_stride` apart (e.g. one
    /// head's queries inside the `(T, 3C)` qkv rows).
    pub fn strided(data: &'a [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        assert!(
            rows == 0 || data.len() >= (rows - 1) * row_stride + cols,
            "strided matrix view out of bounds"
        );
        MatRef {
            data,
            rows,
            cols,
            row_stride,
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

    /// The seam's matrix view, checked against the slice it points into.
    pub fn from_mat(m: Mat<&'a [f32]>) -> Self {
        let last = match (m.rows, m.cols) {
            (0, _) | (_, 0) => 0,
            (r, c) => (r - 1) * m.row_stride + (c - 1) * m.col_stride + 1,
        };
        assert!(
            m.data.len() >= last,
            "matrix view out of bounds: {} < {last}",
            m.data.len()
        );
        MatRef {
            data: m.data,
            rows: m.rows,
            cols: m.cols,
            row_stride: m.row_stride,
            col_stride: m.col_stride,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn row_stride(&self) -> usize {
        self.row_stride
    }

    pub fn col_stride(&self) -> usize {
        self.col_stride
    }

    /// The slice the view reads, from its first element.
    pub fn data(&self) -> &'a [f32] {
        self.data
    }

    /// Row `r` as a slice, for a view whose rows are contiguous (`col_stride == 1`).
    pub fn row(&self, r: usize) -> &'a [f32] {
        assert!(
            self.col_stride == 1 && r < self.rows,
            "row of a strided view"
        );
        &self.data[r * self.row_stride..][..self.cols]
    }

    /// Rows `start..start + count` of this view.
    pub fn rows_range(self, start: usize, count: usize) -> Self {
        MatRef {
            data: &self.data[start * self.row_stride..],
            rows: count,
            ..self
        }
    }

    fn at(&self, r: usize, c: usize) -> f32 {
        self.data[r * self.row_stride + c * self.col_stride]
    }
}

/// `dst (m, n) = lhs @ rhs`, or `dst += lhs @ rhs`; `dst` is row-major.
/// Large products are split across the thread pool; products of a few rows
/// (decoding) read the weights once, in place ([`few_rows`]).
pub fn matmul(dst: &mut [f32], lhs: MatRef, rhs: MatRef, mode: Accumulate) {
    let (m, n) = (lhs.rows, rhs.cols);
    let threads = rayon::current_num_threads();
    let small = m * lhs.cols * n < 64 * 64 * 64;
    if !small && few_rows::applies(&lhs, &rhs) {
        return few_rows::matmul(dst, lhs, rhs, mode);
    }
    if threads == 1 || small {
        return matmul_into(dst, n, lhs, rhs, mode, 1.0, false);
    }
    if m < 64 {
        return matmul_into(dst, n, lhs, rhs, mode, 1.0, true);
    }
    // One block of output rows per thread, each a single-threaded product.
    let rows_per = rows_per_thread(m);
    dst[..m * n]
        .par_chunks_mut(rows_per * n)
        .enumerate()
        .for_each(|(i, block)| {
            let start = i * rows_per;
            let count = block.len() / n;
            matmul_into(
                block,
                n,
                lhs.rows_range(start, count),
                rhs,
                mode,
                1.0,
                false,
            );
        });
}

/// How [`matmul`] splits `m` output rows: one block per thread. Kernels that
/// finish the rows of a product (an activation, say) split the same way, so
/// each thread works on rows that are still in its cache.
pub fn rows_per_thread(m: usize) -> usize {
    m.div_ceil(rayon::current_num_threads()).max(1)
}

/// Tasks per thread in the few-row products (decoding): blocks of rows in
/// [`split_rows_sum`], ranges of output columns for `(OUT, IN)` weights in
/// `few_rows.rs`. With one task each, a thread that the machine slows
/// (another process, a virtual machine's neighbour) holds up the whole
/// product; with a few, the others take over its tasks as they come free.
/// AMD EPYC (Zen 4), 2 threads, alternated: TinyLlama f32 decoding gave 6.3
/// to 6.6 tok/s with one range per thread, 6.2 to 8.1 with 4 or 8; on a
/// quiet stretch 1, 4 and 8 blocks read GPT-2's `(IN, OUT)` matrices at the
/// same 23 to 24 GB/s.
pub(super) const TASKS_PER_THREAD: usize = 4;

thread_local! {
    /// [`split_rows_sum`]'s partial sums, kept between calls so decoding
    /// allocates only on its first token.
    static PARTIAL_SUMS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `dst` (or one block's partial result), shared by the threads of one
/// product; each writes only its own part: a range of columns in every row,
/// or a block of rows and columns.
pub(super) struct Columns {
    ptr: *mut f32,
    len: usize,
    n: usize,
}

// SAFETY: the threads of one product write disjoint parts (each product
// hands each task its own range of columns, or of rows and columns), so no
// element is written twice or read while another thread writes it.
unsafe impl Sync for Columns {}

impl Columns {
    /// `dst` seen as rows of `n`.
    pub(super) fn new(dst: &mut [f32], n: usize) -> Self {
        Columns {
            ptr: dst.as_mut_ptr(),
            len: dst.len(),
            n,
        }
    }

    /// Row `r`, columns `c0..c0 + width`, of `dst`.
    ///
    /// Only called inside the caller's own part, and never while another
    /// borrow of the same part lives.
    #[allow(clippy::mut_from_ref)]
    pub(super) fn part(&self, r: usize, c0: usize, width: usize) -> &mut [f32] {
        assert!(
            c0 + width <= self.n && r * self.n + c0 + width <= self.len,
            "part out of range"
        );
        // SAFETY: the assert keeps the part inside `dst`, which `new`
        // borrowed mutably; parts of different threads are disjoint (above),
        // and each thread borrows one part at a time.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r * self.n + c0), width) }
    }
}

/// `dst[..len] = [dst +] sum over parts of part_sum(rows of the part)`: the
/// `k` rows of a weight matrix split into [`TASKS_PER_THREAD`] contiguous
/// blocks per thread (a multiple of `granule` rows, the last shorter), so
/// each task streams its own stretch of memory; `part_sum` writes a block's
/// whole `len`-float partial result, and the partials are added in block
/// order (the same numbers for a given thread count).
pub(super) fn split_rows_sum(
    dst: &mut [f32],
    len: usize,
    k: usize,
    granule: usize,
    mode: Accumulate,
    part_sum: impl Fn(std::ops::Range<usize>, &mut [f32]) + Sync,
) {
    let rows_per = k
        .div_ceil(rayon::current_num_threads() * TASKS_PER_THREAD)
        .next_multiple_of(granule)
        .max(granule);
    let parts = k.div_ceil(rows_per);
    let mut add_parts = |partials: &mut Vec<f32>| {
        partials.resize(parts * len, 0.0);
        partials
            .par_chunks_mut(len)
            .enumerate()
            .for_each(|(part, sum)| part_sum(part * rows_per..((part + 1) * rows_per).min(k), sum));
        let dst = &mut dst[..len];
        if mode == Accumulate::Overwrite {
            dst.fill(0.0);
        }
        for sum in partials.chunks_exact(len) {
            dst.iter_mut().zip(sum).for_each(|(d, s)| *d += s);
        }
    };
    PARTIAL_SUMS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut partials) => add_parts(&mut partials),
        // Re-entered on this thread (a nested product): use a fresh buffer.
        Err(_) => add_parts(&mut Vec::new()),
    });
}

/// `dst = [dst +] scale * lhs @ rhs`, where row `i` of `dst` starts at
/// `dst[i * dst_row_stride]`. `parallel: false` runs on the calling thread
/// (for small products inside an already parallel loop).
pub fn matmul_into(
    dst: &mut [f32],
    dst_row_stride: usize,
    lhs: MatRef,
    rhs: MatRef,
    mode: Accumulate,
    scale: f32,
    parallel: bool,
) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(rhs.rows, k, "matmul: inner dimensions differ");
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        n <= dst_row_stride && dst.len() >= (m - 1) * dst_row_stride + n,
        "matmul: destination too small"
    );
    let threads = rayon::current_num_threads();
    let parallelism = if parallel && threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above and in `MatRef`'s constructors keep every index
    // gemm computes from these dimensions and strides inside the three slices,
    // and `dst` is borrowed mutably, so it cannot alias `lhs` or `rhs`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_row_stride as isize,
            mode == Accumulate::Add,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            scale,
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
pub(super) mod tests {
    use super::*;
    use crate::rng::Rng;

    /// `n` values uniform in `[-1, 1)`, the same for the same seed.
    pub(in crate::backend::cpu) fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed, 0);
        (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
    }

    /// Both decoding paths (dot products with `W^T` rows; row-split partial
    /// sums over `(IN, OUT)` rows), overwriting and accumulating.
    #[test]
    fn vector_times_matrix_matches_naive() {
        let (k, n) = (300, 1001);
        let x = random(k, 8);
        let w = random(n * k, 9);
        let start = random(n, 10);
        let lhs = MatRef::new(&x, 1, k);
        for rhs in [MatRef::new(&w, n, k).t(), MatRef::new(&w, k, n)] {
            for mode in [Accumulate::Overwrite, Accumulate::Add] {
                let (mut fast, mut slow) = (start.clone(), start.clone());
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

    #[test]
    fn strided_scaled_product_writes_only_its_columns() {
        // A (3, 2) block inside rows of 5, as one head inside qkv rows.
        let (m, k, n, stride) = (3, 4, 2, 5);
        let a = random(m * stride, 6);
        let b = random(k * n, 7);
        let mut dst = vec![9.0f32; m * stride];
        let lhs = MatRef::strided(&a[1..], m, k, stride);
        matmul_into(
            &mut dst[3..],
            stride,
            lhs,
            MatRef::new(&b, k, n),
            Accumulate::Overwrite,
            0.5,
            false,
        );
        for i in 0..m {
            for j in 0..stride {
                let got = dst[i * stride + j];
                if j < 3 {
                    assert_eq!(got, 9.0, "untouched column");
                } else {
                    let want: f32 = (0..k)
                        .map(|p| a[1 + i * stride + p] * b[p * n + j - 3])
                        .sum::<f32>()
                        * 0.5;
                    assert!((got - want).abs() < 1e-5);
                }
            }
        }
    }

    #[test]
    fn matches_naive_for_every_transpose_and_mode() {
        // Large enough (m * k * n >= 64^3) to take the split-by-rows path.
        let (m, k, n) = (97, 70, 45);
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
