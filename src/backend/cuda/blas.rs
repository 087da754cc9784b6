//! Matrix products on cuBLASLt, with the bias added in its epilogue.
//!
//! lmforge's matrices are row-major views with strides ([`crate::backend::Mat`]);
//! cuBLAS's are column-major. A row-major `(m, n)` matrix is the same memory
//! as a column-major `(n, m)` one, its transpose, so
//!
//! ```text
//! dst (m, n) = lhs (m, k) @ rhs (k, n)     is computed as     dst^T = rhs^T @ lhs^T
//! ```
//! in column-major terms: `A = rhs^T (n, k)`, `B = lhs^T (k, m)`, `D = dst^T (n, m)`.
//! A view whose column stride is 1 is, column-major, the transpose already
//! (no transpose flag, leading dimension = its row stride); one whose row
//! stride is 1 is stored as itself (transpose flag, leading dimension = its
//! column stride). The bias of `dst`'s columns is then the bias of `D`'s rows:
//! exactly what `CUBLASLT_EPILOGUE_BIAS` adds.
//!
//! Operands and results are float32. With [`MatmulPrecision::Tf32`] (the
//! default) the products run on TF32 tensor cores
//! (`CUBLAS_COMPUTE_32F_FAST_TF32`: inputs rounded to 10 mantissa bits, sums
//! in float32, relative error about 1e-3); with [`MatmulPrecision::Fp32`] in
//! full float32 (`CUBLAS_COMPUTE_32F`), matching the CPU backend to float32
//! rounding.

use super::MatmulPrecision;
use crate::error::{Error, Result};
use cudarc::cublaslt::{result as lt, sys};
use std::ffi::c_void;

/// One matrix operand: its device address and how cuBLAS reads it.
#[derive(Clone, Copy, Debug)]
pub struct Operand {
    pub addr: u64,
    /// Rows and columns as stored (column-major).
    pub stored_rows: u64,
    pub stored_cols: u64,
    pub ld: i64,
    pub transpose: bool,
}

impl Operand {
    /// The operand for the column-major transpose of a row-major view
    /// `rows x cols` with strides `(row_stride, col_stride)`, one of them 1.
    pub fn transposed_view(
        addr: u64,
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Operand {
        if col_stride == 1 {
            // Column-major, this memory is the (cols, rows) transpose itself.
            Operand {
                addr,
                stored_rows: cols as u64,
                stored_cols: rows as u64,
                ld: row_stride.max(cols).max(1) as i64,
                transpose: false,
            }
        } else {
            assert_eq!(row_stride, 1, "a matrix view needs one stride of 1");
            Operand {
                addr,
                stored_rows: rows as u64,
                stored_cols: cols as u64,
                ld: col_stride.max(rows).max(1) as i64,
                transpose: true,
            }
        }
    }
}

/// A cuBLASLt handle and its workspace.
pub struct Blas {
    handle: sys::cublasLtHandle_t,
    workspace: u64,
    workspace_len: usize,
    compute: sys::cublasComputeType_t,
}

// SAFETY: the handle is used from one thread at a time (the backend's calls
// are sequential on one stream); cuBLASLt handles may move between threads.
unsafe impl Send for Blas {}
// SAFETY: as above; `&Blas` is only used to enqueue work on the one stream.
unsafe impl Sync for Blas {}

impl Blas {
    /// A handle using the `workspace_len` bytes at `workspace`, its
    /// products in `precision`.
    pub fn new(workspace: u64, workspace_len: usize, precision: MatmulPrecision) -> Result<Blas> {
        let handle = lt::create_handle().map_err(|e| blas_error("start cuBLASLt", e))?;
        Ok(Blas {
            handle,
            workspace,
            workspace_len,
            compute: compute_type(precision),
        })
    }

    /// `D (n, m) = [D +] A @ B [+ bias]` with `A = a (n, k)` and
    /// `B = b (k, m)` after their transpose flags, `D` column-major with
    /// leading dimension `n`.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul(
        &self,
        stream: sys::cudaStream_t,
        d: u64,
        a: Operand,
        b: Operand,
        (n, m): (u64, u64),
        accumulate: bool,
        bias: Option<u64>,
    ) -> Result<()> {
        let desc = Desc::new(self.compute, (a.transpose, b.transpose), bias)?;
        let la = Layout::new(a.stored_rows, a.stored_cols, a.ld)?;
        let lb = Layout::new(b.stored_rows, b.stored_cols, b.ld)?;
        let ld = Layout::new(n, m, n.max(1) as i64)?;
        let pref = Pref::new(self.workspace_len, [a.addr, b.addr, d, d])?;
        // SAFETY: every descriptor is live for this call; the pointers are
        // device addresses of buffers at least as large as their layouts.
        unsafe {
            let heuristic =
                lt::get_matmul_algo_heuristic(self.handle, desc.0, la.0, lb.0, ld.0, ld.0, pref.0)
                    .map_err(|e| blas_error("find a matrix-product algorithm", e))?;
            let (alpha, beta) = (1.0f32, if accumulate { 1.0f32 } else { 0.0 });
            lt::matmul(
                self.handle,
                desc.0,
                (&alpha as *const f32).cast(),
                (&beta as *const f32).cast(),
                a.addr as *const c_void,
                la.0,
                b.addr as *const c_void,
                lb.0,
                d as *const c_void,
                ld.0,
                d as *mut c_void,
                ld.0,
                &heuristic.algo,
                self.workspace as *mut c_void,
                self.workspace_len,
                stream,
            )
            .map_err(|e| blas_error("run a matrix product", e))
        }
    }
}

impl Drop for Blas {
    fn drop(&mut self) {
        // SAFETY: the handle was created in `new` and is not used after this.
        let _ = unsafe { lt::destroy_handle(self.handle) };
    }
}

/// cuBLASLt's compute type for `precision` (operands stay float32 either way).
fn compute_type(precision: MatmulPrecision) -> sys::cublasComputeType_t {
    match precision {
        MatmulPrecision::Tf32 => sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
        MatmulPrecision::Fp32 => sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
    }
}

fn blas_error(what: &str, e: lt::CublasError) -> Error {
    Error::Cuda(format!("could not {what}: {e:?}"))
}

/// A matmul descriptor: the compute type, transposes, the bias epilogue.
struct Desc(sys::cublasLtMatmulDesc_t);

impl Desc {
    fn new(
        compute: sys::cublasComputeType_t,
        (transpose_a, transpose_b): (bool, bool),
        bias: Option<u64>,
    ) -> Result<Desc> {
        let desc = Desc(
            lt::create_matmul_desc(compute, sys::cudaDataType::CUDA_R_32F)
                .map_err(|e| blas_error("describe a matrix product", e))?,
        );
        // cublasOperation_t: 0 = N, 1 = T (cuBLASLt's bindings do not name it).
        let op = |t: bool| i32::from(t);
        use sys::cublasLtMatmulDescAttributes_t as A;
        desc.set(A::CUBLASLT_MATMUL_DESC_TRANSA, &op(transpose_a))?;
        desc.set(A::CUBLASLT_MATMUL_DESC_TRANSB, &op(transpose_b))?;
        if let Some(bias) = bias {
            desc.set(
                A::CUBLASLT_MATMUL_DESC_EPILOGUE,
                &sys::cublasLtEpilogue_t::CUBLASLT_EPILOGUE_BIAS,
            )?;
            desc.set(A::CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias)?;
        }
        Ok(desc)
    }

    fn set<T>(&self, attr: sys::cublasLtMatmulDescAttributes_t, value: &T) -> Result<()> {
        // SAFETY: `value` points to `size_of::<T>()` bytes of the type `attr` expects.
        unsafe {
            lt::set_matmul_desc_attribute(
                self.0,
                attr,
                (value as *const T).cast(),
                std::mem::size_of::<T>(),
            )
        }
        .map_err(|e| blas_error("set up a matrix product", e))
    }
}

impl Drop for Desc {
    fn drop(&mut self) {
        // SAFETY: created in `new`, not used after this.
        let _ = unsafe { lt::destroy_matmul_desc(self.0) };
    }
}

/// A column-major float32 matrix layout.
struct Layout(sys::cublasLtMatrixLayout_t);

impl Layout {
    fn new(rows: u64, cols: u64, ld: i64) -> Result<Layout> {
        lt::create_matrix_layout(sys::cudaDataType::CUDA_R_32F, rows, cols, ld)
            .map(Layout)
            .map_err(|e| blas_error("lay out a matrix", e))
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        // SAFETY: created in `new`, not used after this.
        let _ = unsafe { lt::destroy_matrix_layout(self.0) };
    }
}

/// The alignment of a device address in bytes, as cuBLASLt counts it (up to 256).
fn alignment(addr: u64) -> u32 {
    1u32 << addr.trailing_zeros().min(8)
}

/// Search preferences: the workspace's size, and how the operands are
/// aligned. cuBLASLt assumes 256-byte alignment unless told otherwise, and
/// lmforge's views start anywhere in their buffers (a weight inside the flat
/// parameter buffer), so the algorithms must be chosen for the real one.
struct Pref(sys::cublasLtMatmulPreference_t);

impl Pref {
    /// `addrs`: the addresses of A, B, C and D.
    fn new(workspace_len: usize, addrs: [u64; 4]) -> Result<Pref> {
        use sys::cublasLtMatmulPreferenceAttributes_t as P;
        let pref = Pref(lt::create_matmul_pref().map_err(|e| blas_error("set up a search", e))?);
        pref.set(
            P::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
            &(workspace_len as u64),
        )?;
        let attrs = [
            P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
            P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
            P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
            P::CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
        ];
        for (attr, addr) in attrs.into_iter().zip(addrs) {
            pref.set(attr, &alignment(addr))?;
        }
        Ok(pref)
    }

    fn set<T>(&self, attr: sys::cublasLtMatmulPreferenceAttributes_t, value: &T) -> Result<()> {
        // SAFETY: `value` points to `size_of::<T>()` bytes of the type `attr`
        // expects (u64 for the workspace, u32 for alignments).
        unsafe {
            lt::set_matmul_pref_attribute(
                self.0,
                attr,
                (value as *const T).cast(),
                std::mem::size_of::<T>(),
            )
        }
        .map_err(|e| blas_error("set up a search", e))
    }
}

impl Drop for Pref {
    fn drop(&mut self) {
        // SAFETY: created in `new`, not used after this.
        let _ = unsafe { lt::destroy_matmul_pref(self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What cuBLAS computes from the operands, on the host: `D (n, m) = op(A) @ op(B)`,
    /// column-major, element `(i, j)` of a stored matrix at `i + j * ld`.
    fn column_major_product(
        a: (&[f32], Operand),
        b: (&[f32], Operand),
        n: usize,
        m: usize,
    ) -> Vec<f32> {
        let at = |(x, o): (&[f32], Operand), i: usize, j: usize| {
            let (r, c) = if o.transpose { (j, i) } else { (i, j) };
            x[r + c * o.ld as usize]
        };
        let k = if a.1.transpose {
            a.1.stored_rows
        } else {
            a.1.stored_cols
        } as usize;
        let mut d = vec![0.0; n * m];
        for j in 0..m {
            for i in 0..n {
                d[i + j * n] = (0..k).map(|p| at(a, i, p) * at(b, p, j)).sum();
            }
        }
        d
    }

    #[test]
    fn tf32_is_the_default_and_fp32_is_full_float32() {
        use sys::cublasComputeType_t as C;
        let default = compute_type(MatmulPrecision::default());
        assert!(matches!(default, C::CUBLAS_COMPUTE_32F_FAST_TF32));
        assert!(matches!(
            compute_type(MatmulPrecision::Fp32),
            C::CUBLAS_COMPUTE_32F
        ));
    }

    #[test]
    fn alignment_is_the_largest_power_of_two_up_to_256() {
        assert_eq!(alignment(0x7f00_0000_0004), 4);
        assert_eq!(alignment(0x7f00_0000_0010), 16);
        assert_eq!(alignment(0x7f00_0000_1000), 256);
    }

    #[test]
    fn row_major_views_map_to_the_column_major_transposed_product() {
        let (m, k, n) = (3, 4, 5);
        let lhs: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 2.0).collect();
        let rhs: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 - 3.0).collect();
        let expected: Vec<f32> = (0..m * n)
            .map(|e| {
                (0..k)
                    .map(|p| lhs[e / n * k + p] * rhs[p * n + e % n])
                    .sum()
            })
            .collect();
        for (lhs_t, rhs_t) in [(false, false), (true, false), (false, true), (true, true)] {
            // A transposed view reads the matrix stored the other way round.
            let stored = |x: &[f32], rows: usize, cols: usize, t: bool| -> Vec<f32> {
                if !t {
                    return x.to_vec();
                }
                (0..rows * cols)
                    .map(|e| x[e % rows * cols + e / rows])
                    .collect()
            };
            let (l, r) = (stored(&lhs, m, k, lhs_t), stored(&rhs, k, n, rhs_t));
            let (ls, rs) = (
                if lhs_t { (1, m) } else { (k, 1) },
                if rhs_t { (1, k) } else { (n, 1) },
            );
            let a = Operand::transposed_view(0, k, n, rs.0, rs.1);
            let b = Operand::transposed_view(0, m, k, ls.0, ls.1);
            let d = column_major_product((&r, a), (&l, b), n, m);
            // D (n, m) column-major is dst (m, n) row-major.
            assert_eq!(d, expected, "lhs_t {lhs_t} rhs_t {rhs_t}");
        }
    }
}
