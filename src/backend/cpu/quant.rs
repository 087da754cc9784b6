//! Weights kept quantized in ggml's Q8_0 and Q4_0 blocks, and the product of
//! f32 activations with them, as llama.cpp computes it.
//!
//! A weight matrix `W (IN, OUT)` is `OUT` rows of `IN` values, each row in
//! blocks of 32 along `IN` (the reduction dimension). ggml stores a block as:
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
//! In memory the same bytes are regrouped (as llama.cpp's CPU "repack"
//! buffers do): rows are taken 16 at a time, and block `b` of those 16 rows is
//! one group block ([`simd::GROUP`]): their 16 scales, then their values 4
//! inputs by 16 outputs at a time, the layout of a 512-bit register of 16
//! `i32` sums. Q8_0 values are stored plus 128 (unsigned bytes) for
//! `vpdpbusd`; Q4_0 nibbles are already `q + 8`. The matrix costs the same
//! bytes as the file's tensor (plus at most 15 rows of padding).
//!
//! The product `dst (m, OUT) = x (m, IN) @ W` (llama.cpp's
//! `ggml_vec_dot_q8_0_q8_0` and `ggml_vec_dot_q4_0_q8_0`): each row of `x`
//! is first quantized to Q8_0 once (`dx`, `qx`, and `sum_j qx`), then every
//! output is a sum over the blocks `b` of an exact integer dot product
//! scaled in f32:
//!
//! ```text
//! dst[i, o] = sum_b  (dw[o, b] dx[i, b])  sum_{j in b} qw[o, j] qx[i, j]
//! ```
//!
//! the integer sums from `vpdpbusd` (AVX512_VNNI), `vpmaddubsw` (AVX2) or
//! portable code, chosen at run time, the blocks added in order into one f32
//! per output with no fused steps ([`simd::GroupDot`]). So a result is the
//! same bits at every level, for any thread count, and for a row of `x`
//! alone or in a batch; [`matmul_naive`] is its one-output-at-a-time twin.
//!
//! Error against the exact f32 product of the dequantized weights with `x`:
//! quantizing `x` moves each `x[i, j]` by at most `dx / 2` (plus the f16
//! rounding of `dx` itself, relative `2^-11`, which scales a whole block), so
//! `|err| <= sum_b |dw| (dx / 2 + 2^-11 max_b|x|) sum_j |qw|` plus the f32
//! sums' rounding (tested in [`tests`]).
//!
//! Decoding one token is a matrix-vector product, bound by memory: tasks
//! split the groups, so the threads stream the weights once. A batch of
//! sequences or a prompt takes up to [`TILE_ROWS`] rows of `x` per pass over
//! a group's blocks.

use super::matmul::MatRef;
use super::simd::{
    self, BlockLevel, GROUP, GroupDot, GroupKernel, Q4_0_GROUP_BYTES, Q8_0_GROUP_BYTES, XBlock,
    vectorised,
};
use crate::backend::WeightType;
use crate::error::{Error, Result};
use half::f16;
use rayon::prelude::*;

/// Values per block.
pub const QK: usize = 32;

/// A weight matrix `(IN, OUT)` as groups of 16 rows of Q8_0 or Q4_0 blocks.
pub struct QuantMatrix {
    ty: WeightType,
    in_features: usize,
    out_features: usize,
    bytes: Vec<u8>,
}

impl QuantMatrix {
    /// `w (IN, OUT)` (either stride order) quantized to `ty` (Q8_0 or Q4_0).
    pub fn quantize(w: MatRef, ty: WeightType) -> Result<Self> {
        QuantMatrix::from_ggml_blocks(ty, (w.rows(), w.cols()), |o, b, block| {
            let column: [f32; QK] = std::array::from_fn(|j| {
                w.data()[(b * QK + j) * w.row_stride() + o * w.col_stride()]
            });
            quantize_block(ty, &column, block);
        })
    }

    /// A matrix from the bytes of a GGUF tensor of `ty` with `OUT` rows of `IN` values.
    pub fn from_blocks(ty: WeightType, in_out: (usize, usize), bytes: &[u8]) -> Result<Self> {
        let (bb, blocks) = (ty.block_bytes(), in_out.0 / QK);
        let expected = in_out.1 * blocks * bb;
        if bytes.len() != expected || !in_out.0.is_multiple_of(QK) {
            return Err(Error::Weights(format!(
                "{} bytes for a {} matrix of {} rows of {}: expected {expected}",
                bytes.len(),
                ty.name(),
                in_out.1,
                in_out.0,
            )));
        }
        QuantMatrix::from_ggml_blocks(ty, in_out, |o, b, block| {
            block.copy_from_slice(&bytes[(o * blocks + b) * bb..][..bb])
        })
    }

    /// The matrix whose ggml block `b` of row `o` `block(o, b, out)` writes.
    fn from_ggml_blocks(
        ty: WeightType,
        (in_features, out_features): (usize, usize),
        block: impl Fn(usize, usize, &mut [u8]) + Sync,
    ) -> Result<Self> {
        let mut m = QuantMatrix::zeroed(ty, in_features, out_features)?;
        let bb = ty.block_bytes();
        let (group_bytes, group_block_bytes) = (m.group_bytes(), m.group_block_bytes());
        m.bytes
            .par_chunks_mut(group_bytes.max(1))
            .enumerate()
            .for_each(|(g, group)| {
                let mut one = [0u8; 34];
                for (b, at) in group.chunks_exact_mut(group_block_bytes).enumerate() {
                    for lane in 0..GROUP.min(out_features - g * GROUP) {
                        block(g * GROUP + lane, b, &mut one[..bb]);
                        place(ty, &one[..bb], lane, at);
                    }
                }
            });
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
        let groups = out_features.div_ceil(GROUP);
        let bytes = vec![0; groups * in_features / QK * GROUP * ty.block_bytes()];
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

    /// Bytes of one group's block: 16 ggml blocks.
    fn group_block_bytes(&self) -> usize {
        GROUP * self.ty.block_bytes()
    }

    /// Group `g`'s blocks (outputs `16 g..16 g + 16`), in order along `IN`.
    fn group(&self, g: usize) -> &[u8] {
        &self.bytes_from_group(g)[..self.group_bytes()]
    }

    /// The matrix's bytes from group `g`'s first block on (what the kernel
    /// prefetches from).
    fn bytes_from_group(&self, g: usize) -> &[u8] {
        &self.bytes[g * self.group_bytes()..]
    }

    /// Bytes of one group: its blocks along `IN`.
    fn group_bytes(&self) -> usize {
        self.in_features / QK * self.group_block_bytes()
    }

    /// Block `b` of row `o` in ggml's layout, into `out` (34 or 18 bytes).
    fn ggml_block(&self, o: usize, b: usize, out: &mut [u8]) {
        let at = &self.group(o / GROUP)[b * self.group_block_bytes()..][..self.group_block_bytes()];
        let lane = o % GROUP;
        out[..2].copy_from_slice(&at[2 * lane..][..2]);
        for (j, byte) in out[2..].iter_mut().enumerate() {
            let stored = at[simd::group_byte(lane, j)];
            *byte = match self.ty {
                WeightType::Q4_0 => stored,
                _ => stored ^ 0x80,
            };
        }
    }

    /// Column `o` of `W` (row `o` of the stored matrix) as f32, into `out (IN)`.
    pub fn dequantize_row(&self, o: usize, out: &mut [f32]) {
        let mut block = [0u8; 34];
        let block = &mut block[..self.ty.block_bytes()];
        for (b, out) in out.chunks_exact_mut(QK).enumerate() {
            self.ggml_block(o, b, block);
            let d = f16::from_le_bytes([block[0], block[1]]).to_f32();
            for (j, o) in out.iter_mut().enumerate() {
                *o = d * quantized_value(self.ty, block, j) as f32;
            }
        }
    }
}

/// Write ggml block `block` of the group's output `lane` into the group block
/// `at` (the layout in [`simd::GROUP`]'s table): for Q4_0 the 16 nibble
/// bytes keep their order, byte `4k + t` at chunk `k`; for Q8_0 value `j`
/// goes to chunk `j / 4`, plus 128.
fn place(ty: WeightType, block: &[u8], lane: usize, at: &mut [u8]) {
    at[2 * lane..][..2].copy_from_slice(&block[..2]);
    for (j, &byte) in block[2..].iter().enumerate() {
        at[simd::group_byte(lane, j)] = match ty {
            WeightType::Q4_0 => byte,
            _ => byte ^ 0x80,
        };
    }
}

/// Value `j` of a ggml block, before its scale.
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
/// `max|x|` compares the bits of `|x|` as integers: the same order for
/// numbers, and a loop the compiler vectorises. A NaN counts as 0, so it is
/// skipped, as by ggml's reference quantizer and `f32::max`.
#[inline(always)]
fn quantize_q8_0(x: &[f32; QK]) -> (f32, [i8; QK]) {
    let magnitude = |v: &f32| match v.to_bits() & 0x7fff_ffff {
        nan if nan > f32::INFINITY.to_bits() => 0,
        bits => bits,
    };
    let amax = f32::from_bits(x.iter().map(magnitude).max().unwrap_or(0));
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    // A loop, not `array::from_fn`: its closure may stay out of line, then
    // compiled without the vector level's features.
    let mut q = [0i8; QK];
    for (q, &v) in q.iter_mut().zip(x) {
        *q = (v * id).round() as i8;
    }
    (d, q)
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
    /// Each block's `[-128 sum q, -8 sum q]` ([`XBlock::minus_offset`]).
    minus_offsets: Vec<[i32; 2]>,
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
        self.minus_offsets.resize(blocks, [0; 2]);
        let per_row = self.blocks_per_row.max(1);
        self.d
            .par_chunks_mut(per_row)
            .zip(self.qs.par_chunks_mut(per_row))
            .zip(self.minus_offsets.par_chunks_mut(per_row))
            .enumerate()
            .for_each(|(i, ((d, qs), terms))| {
                vectorised!({
                    let blocks = d.iter_mut().zip(qs.iter_mut()).zip(terms.iter_mut());
                    for (b, ((d, qs), terms)) in blocks.enumerate() {
                        let values = match x.col_stride() {
                            1 => x.row(i).as_chunks::<QK>().0[b],
                            stride => {
                                let first = i * x.row_stride() + b * QK * stride;
                                let mut values = [0f32; QK];
                                for (j, v) in values.iter_mut().enumerate() {
                                    *v = x.data()[first + j * stride];
                                }
                                values
                            }
                        };
                        let (scale, q) = quantize_q8_0(&values);
                        (*d, *qs) = (f16::from_f32(scale).to_f32(), q);
                        let sum: i32 = q.iter().map(|&v| v as i32).sum();
                        *terms = [-128 * sum, -8 * sum];
                    }
                })
            });
    }

    /// Row `i`'s blocks.
    fn row(&self, i: usize) -> RowBlocks<'_> {
        let at = i * self.blocks_per_row..(i + 1) * self.blocks_per_row;
        RowBlocks {
            d: &self.d[at.clone()],
            qs: &self.qs[at.clone()],
            minus_offsets: &self.minus_offsets[at],
        }
    }
}

/// The blocks of one row of [`QuantizedRows`].
#[derive(Clone, Copy)]
struct RowBlocks<'a> {
    d: &'a [f32],
    qs: &'a [[i8; QK]],
    minus_offsets: &'a [[i32; 2]],
}

impl<'a> RowBlocks<'a> {
    /// Block `b`.
    #[inline(always)]
    fn block(self, b: usize) -> XBlock<'a> {
        XBlock {
            q: &self.qs[b],
            d: &self.d[b],
            minus_offset: &self.minus_offsets[b],
        }
    }
}

/// `dst (m, OUT) = x @ W` (`dst` row-major); `scratch` holds the result
/// group by group when `m > 1`.
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
    let run = |g: usize, out: &mut [f32]| {
        simd::dispatch_groups_at(level, Group { out, x, w, g });
    };
    if m == 1 {
        // One row: each group's 16 outputs are 16 consecutive values of `dst`.
        dst[..n]
            .par_chunks_mut(GROUP)
            .enumerate()
            .for_each(|(g, out)| run(g, out));
        return;
    }
    // Group `g` writes its `(m, 16)` block of `scratch`, then the rows of
    // `dst` gather their 16 values from each group. The scratch only grows
    // (a product with fewer outputs would otherwise shrink it, and the next
    // larger one fill it with zeros again).
    let len = n.div_ceil(GROUP) * m * GROUP;
    if scratch.len() < len {
        scratch.resize(len, 0.0);
    }
    scratch[..len]
        .par_chunks_mut(m * GROUP)
        .enumerate()
        .for_each(|(g, out)| run(g, out));
    let by_group = &scratch[..len];
    dst[..m * n]
        .par_chunks_mut(n)
        .enumerate()
        .for_each(|(i, row)| gather_row(row, by_group, m, i));
}

/// Row `i` of the product from the group-major `by_group` (`(m, 16)` per
/// group): whole groups as fixed-size copies (a copy of a length known only
/// at run time is a call to `memcpy` per group), then the last, shorter one.
fn gather_row(row: &mut [f32], by_group: &[f32], m: usize, i: usize) {
    let from = |g: usize| (g * m + i) * GROUP;
    let (groups, rest) = row.as_chunks_mut::<GROUP>();
    for (g, values) in groups.iter_mut().enumerate() {
        *values = *by_group[from(g)..]
            .first_chunk::<GROUP>()
            .expect("whole group");
    }
    if !rest.is_empty() {
        rest.copy_from_slice(&by_group[from(groups.len())..][..rest.len()]);
    }
}

/// Outputs `16 g..` of every row of `x`, into `out` (`(m, lanes)`: 16 lanes,
/// or for one row as many as the matrix has left).
struct Group<'a> {
    out: &'a mut [f32],
    x: &'a QuantizedRows,
    w: &'a QuantMatrix,
    g: usize,
}

impl GroupKernel for Group<'_> {
    type Output = ();

    #[inline(always)]
    fn run<D: GroupDot>(self) {
        match self.w.ty {
            WeightType::Q4_0 => self.rows::<D, Q4_0_GROUP_BYTES, Q4>(),
            _ => self.rows::<D, Q8_0_GROUP_BYTES, Q8>(),
        }
    }
}

/// One group block of `BYTES` bytes times blocks of `R` rows of `x`: a type,
/// not a closure, so that it inlines into the instruction set's copy of the
/// kernel (a closure would be compiled without that copy's features, and called).
trait BlockType<const BYTES: usize> {
    fn dot<D: GroupDot, const R: usize>(acc: [D; R], w: &[u8; BYTES], x: [XBlock; R]) -> [D; R];
}

struct Q8;
struct Q4;

impl BlockType<Q8_0_GROUP_BYTES> for Q8 {
    #[inline(always)]
    fn dot<D: GroupDot, const R: usize>(
        acc: [D; R],
        w: &[u8; Q8_0_GROUP_BYTES],
        x: [XBlock; R],
    ) -> [D; R] {
        D::q8_0(acc, w, x)
    }
}

impl BlockType<Q4_0_GROUP_BYTES> for Q4 {
    #[inline(always)]
    fn dot<D: GroupDot, const R: usize>(
        acc: [D; R],
        w: &[u8; Q4_0_GROUP_BYTES],
        x: [XBlock; R],
    ) -> [D; R] {
        D::q4_0(acc, w, x)
    }
}

/// Rows of `x` per pass over a group's blocks: each weight byte loaded once
/// serves this many rows (then 4, 2 and one at a time).
const TILE_ROWS: usize = 8;

impl Group<'_> {
    /// The group's outputs for every row, in tiles of [`TILE_ROWS`], 4, 2
    /// and 1 rows (so 2 or 3 rows read the weights once, not 2 or 3 times:
    /// 2 rows over all of GPT-2's Q8_0 matrices took 5.6 ms, against 8.1).
    #[inline(always)]
    fn rows<D: GroupDot, const BYTES: usize, T: BlockType<BYTES>>(mut self) {
        let mut i0 = 0;
        while i0 + TILE_ROWS <= self.x.rows {
            i0 = self.tile_rows::<D, BYTES, T, TILE_ROWS>(i0);
        }
        if i0 + 4 <= self.x.rows {
            i0 = self.tile_rows::<D, BYTES, T, 4>(i0);
        }
        if i0 + 2 <= self.x.rows {
            i0 = self.tile_rows::<D, BYTES, T, 2>(i0);
        }
        if i0 < self.x.rows {
            self.tile_rows::<D, BYTES, T, 1>(i0);
        }
    }

    /// Rows `i0..i0 + R` into `out`; the next row.
    #[inline(always)]
    fn tile_rows<D: GroupDot, const BYTES: usize, T: BlockType<BYTES>, const R: usize>(
        &mut self,
        i0: usize,
    ) -> usize {
        let blocks = self.w.group(self.g).as_chunks::<BYTES>().0;
        let ahead = self.w.bytes_from_group(self.g);
        let lanes = self.out.len() / self.x.rows;
        let sums = tile::<D, BYTES, T, R>(blocks, ahead, self.x, i0);
        for (r, sum) in sums.iter().enumerate() {
            sum.store(&mut self.out[(i0 + r) * lanes..][..lanes]);
        }
        i0 + R
    }
}

/// Group blocks ahead of the one being read that the CPU is asked to fetch,
/// for one row of `x` (into every cache level) and for several (into the
/// level-2 cache, further ahead). With several rows a block takes long
/// enough that the hardware prefetchers fall behind, and the weights' wait
/// on memory would add to the arithmetic instead of overlapping it.
/// Measured over all of GPT-2's matrices in Q8_0 (2 threads, Zen 4): at 8
/// rows, 12 blocks ahead read 1.3x faster from memory than none, and 24
/// ahead into level 2 instead took 5.9 ms against 6.4 (medians of 15
/// alternated rounds; 4 rows alike), where one row takes about 5.2 ms.
const PREFETCH_BLOCKS: usize = 12;
const PREFETCH_BLOCKS_L2: usize = 24;

/// The 16 outputs of a group for rows `i0..i0 + R` of `x`, block by block;
/// `ahead` is the matrix's bytes from the group's first block on.
#[inline(always)]
fn tile<D: GroupDot, const BYTES: usize, T: BlockType<BYTES>, const R: usize>(
    blocks: &[[u8; BYTES]],
    ahead: &[u8],
    x: &QuantizedRows,
    i0: usize,
) -> [D; R] {
    let rows: [RowBlocks; R] = std::array::from_fn(|r| x.row(i0 + r));
    let mut acc = [D::ZERO; R];
    for (b, block) in blocks.iter().enumerate() {
        for line in (0..BYTES).step_by(64) {
            match R {
                1 => simd::prefetch(ahead, (b + PREFETCH_BLOCKS) * BYTES + line),
                _ => simd::prefetch_l2(ahead, (b + PREFETCH_BLOCKS_L2) * BYTES + line),
            }
        }
        acc = T::dot(acc, block, std::array::from_fn(|r| rows[r].block(b)));
    }
    acc
}

/// The slow, obviously correct twin of [`matmul`]: each output one ggml
/// block at a time, integer sums then `acc + (dw dx) sum` in f32, from the
/// same quantized `x`.
pub fn matmul_naive(dst: &mut [f32], x: &QuantizedRows, w: &QuantMatrix) {
    let (m, n) = (x.rows, w.out_features);
    let mut block = [0u8; 34];
    let block = &mut block[..w.ty.block_bytes()];
    for i in 0..m {
        for o in 0..n {
            let mut acc = 0f32;
            for b in 0..x.blocks_per_row {
                w.ggml_block(o, b, block);
                let dw = f16::from_le_bytes([block[0], block[1]]).to_f32();
                let xb = x.row(i).block(b);
                let sum: i32 = (0..QK)
                    .map(|j| quantized_value(w.ty, block, j) * xb.q[j] as i32)
                    .sum();
                acc += (dw * *xb.d) * sum as f32;
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
    const SHAPES: [(usize, usize, usize); 9] = [
        (1, 32, 1),
        (1, 96, 37),
        (2, 32, 16),
        (3, 64, 17),
        (7, 64, 19),
        (5, 128, 33),
        (9, 64, 23),
        (1, 256, 100),
        (4, 64, 32),
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
                    // The same bits: exact integer sums, the same f32 steps.
                    let same = got
                        .iter()
                        .zip(&want)
                        .all(|(g, e)| g.to_bits() == e.to_bits());
                    assert!(same, "{ty:?} {level:?} ({m},{k},{n}): {got:?} vs {want:?}");
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
            // Back to ggml's layout (a GGUF tensor's bytes), and in again.
            let bb = ty.block_bytes();
            let mut ggml = vec![0; 3 * 2 * bb];
            for (at, block) in ggml.chunks_exact_mut(bb).enumerate() {
                wq.ggml_block(at / 2, at % 2, block);
            }
            let again = QuantMatrix::from_blocks(ty, (64, 3), &ggml).unwrap();
            assert!(
                again.bytes == wq.bytes,
                "{ty:?}: the regrouped bytes differ"
            );
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

    /// Rows read through a transposed view (the gathering path) quantize to
    /// the same blocks as the same rows stored contiguously.
    #[test]
    fn strided_rows_quantize_as_contiguous_ones() {
        let (m, k) = (3, 96);
        let x = random(m * k, 5);
        let xt: Vec<f32> = (0..k * m).map(|i| x[(i % m) * k + i / m]).collect();
        let contiguous = quantized(&x, m, k);
        let mut strided = QuantizedRows::default();
        strided.fill(MatRef::new(&xt, k, m).t());
        assert_eq!(strided.d, contiguous.d);
        assert_eq!(strided.qs, contiguous.qs);
        assert_eq!(strided.minus_offsets, contiguous.minus_offsets);
        let sum: i32 = contiguous.qs[0].iter().map(|&q| q as i32).sum();
        assert_eq!(contiguous.minus_offsets[0], [-128 * sum, -8 * sum]);
    }

    /// `max|x|` by integer bits gives f32's own maximum, and skips a NaN.
    #[test]
    fn the_block_scale_is_the_largest_magnitude_and_skips_nan() {
        let mut x: [f32; QK] = std::array::from_fn(|j| (j as f32 - 20.0) * 0.25);
        let (d, _) = quantize_q8_0(&x);
        assert_eq!(d, 5.0 / 127.0);
        x[3] = f32::NAN;
        x[9] = -7.5;
        let (d, q) = quantize_q8_0(&x);
        assert_eq!((d, q[9], q[3]), (7.5 / 127.0, -127, 0));
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
