//! Weights kept quantized in ggml's Q8_0 and Q4_0 blocks, and the product of
//! f32 activations with them, as llama.cpp computes it.
//!
//! A weight matrix `W (IN, OUT)` is stored as `OUT` rows of `IN` values,
//! each row in blocks of 32 along `IN` (the reduction dimension), in ggml's
//! exact layout, so a GGUF tensor's bytes are used as they are:
//!
//! | type | bytes per 32 values | block | value `j` |
//! |---|---|---|---|
//! | Q8_0 | 34 | `d: f16`, `qs: [i8; 32]` | `d * qs[j]` |
//! | Q4_0 | 18 | `d: f16`, `qs: [u8; 16]` | `d * ((qs[j] & 15) - 8)`, `d * ((qs[j - 16] >> 4) - 8)` for `j >= 16` |
//!
//! Quantizing rounds as ggml's reference quantizers do (`quantize_row_q8_0_ref`:
//! `d = max|x| / 127`, `q = round(x / d)`; `quantize_row_q4_0_ref`:
//! `d = x_max / -8` with `x_max` the value of largest magnitude,
//! `q = min(15, trunc(x / d + 8.5))`); `gguf::quant` writes files with these.
//!
//! The product `dst (m, OUT) = x (m, IN) @ W` (llama.cpp's
//! `ggml_vec_dot_q8_0_q8_0` and `ggml_vec_dot_q4_0_q8_0`): each row of `x`
//! is first quantized to Q8_0 once (`dx`, `qx`), then every output is a sum
//! over the blocks `b` of an exact integer dot product scaled in f32:
//!
//! ```text
//! dst[i, o] = sum_b  dw[o, b] dx[i, b]  sum_{j in b} qw[o, j] qx[i, j]
//! ```
//!
//! summed in the 8 lanes of `simd::BlockDot` (AVX2's `vpmaddubsw`, AVX512_VNNI's
//! `vpdpbusd`, or portable code, chosen at run time) and the lanes added in
//! a fixed order. Each output is computed by one task, whole: the result is
//! the same bits for any thread count, at a given [`BlockLevel`].
//!
//! Error against the exact f32 product of the dequantized weights with `x`:
//! quantizing `x` moves each `x[i, j]` by at most `dx / 2` (plus the f16
//! rounding of `dx` itself, relative `2^-11`, which scales a whole block), so
//! `|err| <= sum_b |dw| (dx / 2 + 2^-11 max_b|x|) sum_j |qw|` plus the f32
//! sums' rounding (tested in [`tests`]).
//!
//! Decoding one token is a matrix-vector product, bound by memory: the
//! tasks split the output rows of `W`, so the threads stream its bytes once.
//! Within a task, sums are computed in register tiles of 4 outputs by 4 rows
//! of `x` (4 by 1 when decoding), each with its own accumulator.

use super::matmul::MatRef;
use super::simd::{self, BlockDot, BlockKernel, BlockLevel};
use crate::backend::WeightType;
use crate::error::{Error, Result};
use half::f16;
use rayon::prelude::*;

/// Values per block.
pub const QK: usize = 32;

/// A weight matrix `(IN, OUT)` as `OUT` rows of Q8_0 or Q4_0 blocks along `IN`.
pub struct QuantMatrix {
    ty: WeightType,
    in_features: usize,
    out_features: usize,
    bytes: Vec<u8>,
}

impl QuantMatrix {
    /// `w (IN, OUT)` (either stride order) quantized to `ty` (Q8_0 or Q4_0).
    pub fn quantize(w: MatRef, ty: WeightType) -> Result<Self> {
        let (in_features, out_features) = (w.rows(), w.cols());
        let mut m = QuantMatrix::zeroed(ty, in_features, out_features)?;
        let row_bytes = m.row_bytes();
        m.bytes
            .par_chunks_mut(row_bytes.max(1))
            .enumerate()
            .for_each(|(o, out)| {
                let mut column = [0f32; QK];
                for (b, block) in out.chunks_exact_mut(ty.block_bytes()).enumerate() {
                    for (j, v) in column.iter_mut().enumerate() {
                        let r = b * QK + j;
                        *v = w.data()[r * w.row_stride() + o * w.col_stride()];
                    }
                    quantize_block(ty, &column, block);
                }
            });
        Ok(m)
    }

    /// A matrix from the bytes of a GGUF tensor of `ty` with `OUT` rows of `IN` values.
    pub fn from_blocks(ty: WeightType, in_out: (usize, usize), bytes: &[u8]) -> Result<Self> {
        let mut m = QuantMatrix::zeroed(ty, in_out.0, in_out.1)?;
        if bytes.len() != m.bytes.len() {
            return Err(Error::Weights(format!(
                "{} bytes for a {} matrix of {} rows of {}: expected {}",
                bytes.len(),
                ty.name(),
                in_out.1,
                in_out.0,
                m.bytes.len()
            )));
        }
        m.bytes.copy_from_slice(bytes);
        Ok(m)
    }

    fn zeroed(ty: WeightType, in_features: usize, out_features: usize) -> Result<Self> {
        if !matches!(ty, WeightType::Q8_0 | WeightType::Q4_0) {
            return Err(Error::Weights(format!("{} is not a block type", ty.name())));
        }
        if !in_features.is_multiple_of(QK) {
            return Err(Error::Weights(format!(
                "{} stores rows in blocks of {QK}: {in_features} input features is not a multiple of {QK}",
                ty.name()
            )));
        }
        let bytes = vec![0; out_features * in_features / QK * ty.block_bytes()];
        Ok(QuantMatrix {
            ty,
            in_features,
            out_features,
            bytes,
        })
    }

    pub fn ty(&self) -> WeightType {
        self.ty
    }

    /// `(IN, OUT)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.in_features, self.out_features)
    }

    /// The bytes held (what this matrix costs in memory).
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    fn row_bytes(&self) -> usize {
        self.in_features / QK * self.ty.block_bytes()
    }

    /// Output row `o`'s blocks (column `o` of `W`).
    fn row(&self, o: usize) -> &[u8] {
        &self.bytes[o * self.row_bytes()..][..self.row_bytes()]
    }

    /// Column `o` of `W` (row `o` of the stored matrix) as f32, into `out (IN)`.
    pub fn dequantize_row(&self, o: usize, out: &mut [f32]) {
        let blocks = self.row(o).chunks_exact(self.ty.block_bytes());
        for (block, out) in blocks.zip(out.chunks_exact_mut(QK)) {
            let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
            for (j, o) in out.iter_mut().enumerate() {
                *o = d * quantized_value(self.ty, block, j) as f32;
            }
        }
    }
}

/// Value `j` of a block, before its scale.
#[inline(always)]
fn quantized_value(ty: WeightType, block: &[u8], j: usize) -> i32 {
    match ty {
        WeightType::Q4_0 if j < 16 => (block[2 + j] & 15) as i32 - 8,
        WeightType::Q4_0 => (block[2 + j - 16] >> 4) as i32 - 8,
        _ => block[2 + j] as i8 as i32,
    }
}

/// Quantize 32 values into one block of `ty` (Q8_0 or Q4_0), as ggml's
/// reference quantizers round.
pub fn quantize_block(ty: WeightType, x: &[f32; QK], out: &mut [u8]) {
    match ty {
        WeightType::Q4_0 => {
            let max = x
                .iter()
                .fold(0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
            let d = max / -8.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
            // As gguf-py: `v * id` rounded to f32, then `+ 8.5` rounded to f32
            // (Rust never fuses the two into one FMA). Computed exactly, in f64,
            // a `v * id` just under 4.5 that f32 rounds to 4.5 would give 12
            // where gguf-py gives 13.
            let q = |v: f32| ((v * id + 8.5f32) as u8).min(15);
            for j in 0..16 {
                out[2 + j] = q(x[j]) | (q(x[j + 16]) << 4);
            }
        }
        _ => {
            let (d, q) = quantize_q8_0(x);
            out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
            for (o, q) in out[2..].iter_mut().zip(q) {
                *o = q as u8;
            }
        }
    }
}

/// `d = max|x| / 127` and `q = round(x / d)` (halves away from zero).
#[inline(always)]
fn quantize_q8_0(x: &[f32; QK]) -> (f32, [i8; QK]) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    (d, std::array::from_fn(|j| (x[j] * id).round() as i8))
}

/// Rows of activations quantized to Q8_0: the left operand of [`matmul`],
/// kept by the backend and refilled for every product (allocating only to grow).
#[derive(Default)]
pub struct QuantizedRows {
    rows: usize,
    blocks_per_row: usize,
    /// Each block's scale, rounded through f16 as ggml stores it.
    d: Vec<f32>,
    qs: Vec<[i8; QK]>,
}

impl QuantizedRows {
    /// Overwrite with `x (m, IN)` quantized (`IN` a multiple of [`QK`]).
    pub fn fill(&mut self, x: MatRef) {
        assert_eq!(x.cols() % QK, 0, "q8_0 rows: IN not a multiple of {QK}");
        self.rows = x.rows();
        self.blocks_per_row = x.cols() / QK;
        let blocks = self.rows * self.blocks_per_row;
        self.d.resize(blocks, 0.0);
        self.qs.resize(blocks, [0; QK]);
        let per_row = self.blocks_per_row.max(1);
        self.d
            .par_chunks_mut(per_row)
            .zip(self.qs.par_chunks_mut(per_row))
            .enumerate()
            .for_each(|(i, (d, qs))| {
                for (b, (d, qs)) in d.iter_mut().zip(qs).enumerate() {
                    let values: [f32; QK] = std::array::from_fn(|j| {
                        x.data()[i * x.row_stride() + (b * QK + j) * x.col_stride()]
                    });
                    let (scale, q) = quantize_q8_0(&values);
                    (*d, *qs) = (f16::from_f32(scale).to_f32(), q);
                }
            });
    }

    fn row(&self, i: usize) -> (&[f32], &[[i8; QK]]) {
        let at = i * self.blocks_per_row;
        (
            &self.d[at..][..self.blocks_per_row],
            &self.qs[at..][..self.blocks_per_row],
        )
    }
}

/// Output rows of `W` per parallel task.
const TASK_OUTPUTS: usize = 16;

/// `dst (m, OUT) = x @ W` (`dst` row-major) at the chosen [`BlockLevel`];
/// `scratch` holds the transposed result when `m > 1`.
pub fn matmul(dst: &mut [f32], x: &QuantizedRows, w: &QuantMatrix, scratch: &mut Vec<f32>) {
    matmul_at(BlockLevel::chosen(), dst, x, w, scratch)
}

/// [`matmul`] at a given level (tests compare the levels).
pub fn matmul_at(
    level: BlockLevel,
    dst: &mut [f32],
    x: &QuantizedRows,
    w: &QuantMatrix,
    scratch: &mut Vec<f32>,
) {
    let (m, n) = (x.rows, w.out_features);
    assert_eq!(
        x.blocks_per_row * QK,
        w.in_features,
        "q8_0 matmul: inner dimensions"
    );
    assert!(dst.len() >= m * n, "q8_0 matmul: dst too short");
    if m * n == 0 {
        return;
    }
    // Tasks own whole outputs `o` (rows of the transposed result `(OUT, m)`),
    // which for one row of `x` is `dst` itself.
    let transposed: &mut [f32] = match m {
        1 => &mut dst[..n],
        _ => {
            scratch.resize(m * n, 0.0);
            &mut scratch[..m * n]
        }
    };
    transposed
        .par_chunks_mut(TASK_OUTPUTS * m)
        .enumerate()
        .for_each(|(task, out)| {
            let kernel = Outputs {
                out,
                x,
                w,
                first: task * TASK_OUTPUTS,
            };
            simd::dispatch_blocks_at(level, kernel)
        });
    if m > 1 {
        let transposed = &scratch[..m * n];
        dst[..m * n]
            .par_chunks_mut(n)
            .enumerate()
            .for_each(|(i, row)| {
                for (o, v) in row.iter_mut().enumerate() {
                    *v = transposed[o * m + i];
                }
            });
    }
}

/// Outputs `first..` of every row of `x`, into `out` (`(count, m)`).
struct Outputs<'a> {
    out: &'a mut [f32],
    x: &'a QuantizedRows,
    w: &'a QuantMatrix,
    first: usize,
}

impl BlockKernel for Outputs<'_> {
    type Output = ();

    #[inline(always)]
    fn run<D: BlockDot>(self) {
        match self.w.ty {
            WeightType::Q4_0 => self.tiles::<D, 18, Q4>(),
            _ => self.tiles::<D, 34, Q8>(),
        }
    }
}

/// One weight block of `BYTES` bytes times one block of `x`, added into a
/// [`BlockDot`]: a type, not a closure, so that it inlines into the
/// instruction set's copy of the kernel (a closure would be compiled
/// without that copy's features, and called).
trait BlockType<const BYTES: usize> {
    fn dot<D: BlockDot>(acc: D, w: &[u8; BYTES], x: &[i8; QK], dx: f32) -> D;
}

struct Q8;
struct Q4;

impl BlockType<34> for Q8 {
    #[inline(always)]
    fn dot<D: BlockDot>(acc: D, w: &[u8; 34], x: &[i8; QK], dx: f32) -> D {
        acc.dot_q8_0(w, x, dx)
    }
}

impl BlockType<18> for Q4 {
    #[inline(always)]
    fn dot<D: BlockDot>(acc: D, w: &[u8; 18], x: &[i8; QK], dx: f32) -> D {
        acc.dot_q4_0(w, x, dx)
    }
}

/// Outputs and rows of `x` per register tile: [`TILE_OUTPUTS`] x
/// [`TILE_ROWS`] sums in flight, each weight block read once for the
/// tile's rows and each block of `x` once for its outputs (prompts); one row
/// (decoding) takes [`TILE_OUTPUTS`] outputs at a time, so that several
/// independent sums hide the multiply-add latency.
const TILE_OUTPUTS: usize = 4;
const TILE_ROWS: usize = 4;

impl Outputs<'_> {
    /// Every output of the task in tiles, the ragged edges one sum at a
    /// time. Each sum adds its blocks in order into one accumulator, so a
    /// result does not depend on the tile it was computed in.
    #[inline(always)]
    fn tiles<D: BlockDot, const BYTES: usize, T: BlockType<BYTES>>(self) {
        let Outputs { out, x, w, first } = self;
        let m = x.rows;
        let count = out.len() / m;
        let weights = |o: usize| w.row(first + o).as_chunks::<BYTES>().0;
        for o0 in (0..count).step_by(TILE_OUTPUTS) {
            if o0 + TILE_OUTPUTS > count {
                // The task's last few outputs, one sum at a time.
                for o in o0..count {
                    for i in 0..m {
                        out[o * m + i] = tile::<D, BYTES, T, 1, 1>([weights(o)], [x.row(i)])[0][0];
                    }
                }
                continue;
            }
            let w_tile = std::array::from_fn(|o| weights(o0 + o));
            let mut i0 = 0;
            while i0 + TILE_ROWS <= m {
                let rows = std::array::from_fn(|r| x.row(i0 + r));
                let sums = tile::<D, BYTES, T, TILE_OUTPUTS, TILE_ROWS>(w_tile, rows);
                for (o, row) in sums.iter().enumerate() {
                    out[(o0 + o) * m + i0..][..TILE_ROWS].copy_from_slice(row);
                }
                i0 += TILE_ROWS;
            }
            for i in i0..m {
                let sums = tile::<D, BYTES, T, TILE_OUTPUTS, 1>(w_tile, [x.row(i)]);
                for (o, row) in sums.iter().enumerate() {
                    out[(o0 + o) * m + i] = row[0];
                }
            }
        }
    }
}

/// `sums[o][r] = dot(W row o, x row r)` for `O` weight rows and `R` rows of
/// `x`, block by block, each sum in its own accumulator.
#[inline(always)]
fn tile<D: BlockDot, const BYTES: usize, T: BlockType<BYTES>, const O: usize, const R: usize>(
    w: [&[[u8; BYTES]]; O],
    x: [(&[f32], &[[i8; QK]]); R],
) -> [[f32; R]; O] {
    let blocks = x[0].1.len();
    // Every row cut to the same length, so the loop indexes without checks.
    let w: [&[[u8; BYTES]]; O] = std::array::from_fn(|o| &w[o][..blocks]);
    let x: [(&[f32], &[[i8; QK]]); R] =
        std::array::from_fn(|r| (&x[r].0[..blocks], &x[r].1[..blocks]));
    let mut acc = [[D::ZERO; R]; O];
    // Block `b` of every row at once: an index, not one iterator per row.
    #[allow(clippy::needless_range_loop)]
    for b in 0..blocks {
        for o in 0..O {
            for r in 0..R {
                acc[o][r] = T::dot(acc[o][r], &w[o][b], &x[r].1[b], x[r].0[b]);
            }
        }
    }
    let mut sums = [[0.0; R]; O];
    for o in 0..O {
        for r in 0..R {
            sums[o][r] = acc[o][r].sum();
        }
    }
    sums
}

/// The slow, obviously correct twin of [`matmul`]: each output one block at
/// a time, integer sums then `acc += (dw dx) sum` in one f32, from the same
/// quantized `x`.
pub fn matmul_naive(dst: &mut [f32], x: &QuantizedRows, w: &QuantMatrix) {
    let (m, n) = (x.rows, w.out_features);
    let bb = w.ty.block_bytes();
    for i in 0..m {
        let (dx, qx) = x.row(i);
        for o in 0..n {
            let mut acc = 0f32;
            for (b, block) in w.row(o).chunks_exact(bb).enumerate() {
                let dw = f16::from_le_bytes([block[0], block[1]]).to_f32();
                let sum: i32 = (0..QK)
                    .map(|j| quantized_value(w.ty, block, j) * qx[b][j] as i32)
                    .sum();
                acc += dw * dx[b] * sum as f32;
            }
            dst[i * n + o] = acc;
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

    fn quantized(x: &[f32], m: usize, k: usize) -> QuantizedRows {
        let mut rows = QuantizedRows::default();
        rows.fill(MatRef::new(x, m, k));
        rows
    }

    /// `(m, IN, OUT)`: one row (decoding), several, OUT past a task's edge and
    /// rows and outputs past a tile's.
    const SHAPES: [(usize, usize, usize); 6] = [
        (1, 32, 1),
        (1, 96, 37),
        (3, 64, 17),
        (5, 128, 33),
        (9, 64, 23),
        (1, 256, 100),
    ];

    #[test]
    fn every_level_matches_the_naive_twin() {
        for ty in [WeightType::Q8_0, WeightType::Q4_0] {
            for (m, k, n) in SHAPES {
                let (x, w) = (random(m * k, 1), random(k * n, 2));
                // `w` read transposed from `(OUT, IN)` memory, as an LM head's.
                let wq = QuantMatrix::quantize(MatRef::new(&w, n, k).t(), ty).unwrap();
                let xq = quantized(&x, m, k);
                let mut want = vec![0.0; m * n];
                matmul_naive(&mut want, &xq, &wq);
                for level in BlockLevel::ALL.into_iter().filter(|l| l.available()) {
                    let mut got = vec![f32::NAN; m * n];
                    matmul_at(level, &mut got, &xq, &wq, &mut Vec::new());
                    for (g, e) in got.iter().zip(&want) {
                        // Only the order of k / 32 f32 additions differs.
                        let tol = 1e-6 * (k as f32) * e.abs().max(1.0);
                        assert!(
                            (g - e).abs() <= tol,
                            "{ty:?} {level:?} ({m},{k},{n}): {g} vs {e}"
                        );
                    }
                }
            }
        }
    }

    /// Against the exact (f64) product of the dequantized weights with the
    /// unquantized `x`, within the module's bound.
    #[test]
    fn naive_twin_is_within_the_derived_bound_of_the_exact_product() {
        for ty in [WeightType::Q8_0, WeightType::Q4_0] {
            for (m, k, n) in SHAPES {
                let (x, w) = (random(m * k, 3), random(k * n, 4));
                let wq = QuantMatrix::quantize(MatRef::new(&w, k, n), ty).unwrap();
                let xq = quantized(&x, m, k);
                let mut got = vec![0.0; m * n];
                matmul_naive(&mut got, &xq, &wq);
                let mut column = vec![0.0; k];
                for o in 0..n {
                    wq.dequantize_row(o, &mut column);
                    for i in 0..m {
                        let xi = &x[i * k..][..k];
                        let exact: f64 = xi
                            .iter()
                            .zip(&column)
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum();
                        let bound: f64 = (0..k / QK)
                            .map(|b| {
                                let xb = &xi[b * QK..][..QK];
                                let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs())) as f64;
                                let step = amax / 127.0 / 2.0 + amax * 2f64.powi(-11);
                                let wabs: f64 =
                                    column[b * QK..][..QK].iter().map(|v| v.abs() as f64).sum();
                                step * wabs
                                    + 1e-6
                                        * xb.iter()
                                            .zip(&column[b * QK..])
                                            .map(|(a, c)| (a * c).abs() as f64)
                                            .sum::<f64>()
                            })
                            .sum();
                        let err = (got[i * n + o] as f64 - exact).abs();
                        assert!(
                            err <= bound,
                            "{ty:?} ({m},{k},{n}) [{i},{o}]: error {err} > bound {bound}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn blocks_round_trip_within_a_step() {
        // (`gguf::quant` writes with these quantizers: its fixture tests hold
        // them to gguf-py's bytes.)
        let w = random(64 * 3, 5);
        for ty in [WeightType::Q8_0, WeightType::Q4_0] {
            let wq = QuantMatrix::quantize(MatRef::new(&w, 3, 64).t(), ty).unwrap();
            let again = QuantMatrix::from_blocks(ty, (64, 3), &wq.bytes).unwrap();
            let mut row = vec![0.0; 64];
            again.dequantize_row(1, &mut row);
            // Half a step (Q8_0); Q4_0's `+7 d` end clamps the sign opposite
            // the largest magnitude to within a whole step.
            let bound = if ty == WeightType::Q8_0 {
                0.5 / 127.0
            } else {
                1.0 / 8.0
            };
            for (j, v) in row.iter().enumerate() {
                assert!(
                    (v - w[64 + j]).abs() <= bound + 1e-3,
                    "{ty:?} {j}: {v} vs {}",
                    w[64 + j]
                );
            }
        }
    }

    #[test]
    fn bad_shapes_and_byte_counts_are_refused() {
        let w = random(40 * 2, 6);
        let err = QuantMatrix::quantize(MatRef::new(&w, 40, 2), WeightType::Q8_0);
        let err = err.err().expect("IN = 40 refused").to_string();
        assert!(err.contains("40") && err.contains("32"), "{err}");
        let short = QuantMatrix::from_blocks(WeightType::Q4_0, (32, 2), &[0; 35]);
        assert!(
            short
                .err()
                .expect("35 bytes refused")
                .to_string()
                .contains("36")
        );
        assert!(QuantMatrix::quantize(MatRef::new(&w, 2, 40), WeightType::Bf16).is_err());
    }

    #[test]
    fn results_are_the_same_bits_for_any_thread_count() {
        let (m, k, n) = (2, 128, 70);
        let (x, w) = (random(m * k, 7), random(k * n, 8));
        let wq = QuantMatrix::quantize(MatRef::new(&w, k, n), WeightType::Q4_0).unwrap();
        let xq = quantized(&x, m, k);
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut out = vec![0.0; m * n];
            pool.install(|| matmul(&mut out, &xq, &wq, &mut Vec::new()));
            out
        };
        assert!(run(1) == run(3));
    }
}
