//! bfloat16: conversions that round exactly as PyTorch does, and matrix
//! products of bf16 operands with f32 sums (AVX512_BF16 where the CPU has it).
//!
//! A bf16 number is the top half of an f32: sign, the same 8 exponent bits,
//! 7 mantissa bits (8 significant bits: relative spacing 2^-7, rounding
//! error at most 2^-8). So the two conversions are bit operations:
//!
//! ```text
//! f32 -> bf16:  h = (bits + 0x7fff + ((bits >> 16) & 1)) >> 16   round to nearest, ties to even
//!               (a NaN stays a NaN: its top half, with the quiet bit set)
//! bf16 -> f32:  bits = h << 16                                     exact
//! ```
//!
//! Products: `dst (m, n) = [dst +] a (m, k) @ b (k, n)`, `a` and `b` bf16,
//! sums in f32. The elements of `k` go in pairs `(2p, 2p + 1)`, added as
//! AVX512_BF16's `vdpbf16ps` adds them (see `simd::PairDot`):
//!
//! ```text
//! s = 0;  for p:  s = (s + a[i, 2p+1] b[2p+1, j]) + a[i, 2p] b[2p, j];   dst[i, j] = [dst[i, j] +] s
//! ```
//!
//! A product of two bf16 numbers is exact in f32 (8 + 8 significant bits
//! fit in 24), so only the additions round, in that fixed order: the result
//! is the same bits at every level and thread count (away from f32's
//! subnormal range, which the instruction flushes to 0), and [`matmul_naive`]
//! computes it one element at a time. Against the exact sum of the same bf16
//! products, the error is at most about `k 2^-24 sum_p |a b|`.
//!
//! Layouts (odd `k` is padded with a zero):
//! - [`Bf16Rows`] `a`: row `i` is `k / 2` pairs, `(a[i, 2p], a[i, 2p+1])` in one `u32`;
//! - [`Bf16Panels`] `b`: panels of 16 columns; panel `q` is `k / 2` groups
//!   of 16 pairs `(b[2p, 16q + l], b[2p + 1, 16q + l])`, read front to back
//!   by the product (columns past `n` are zeros).

use super::matmul::{Columns, MatRef};
use super::simd::{self, PairDot, PairKernel};
use crate::backend::Accumulate;
use rayon::prelude::*;
use std::ops::Range;

/// `x` rounded to the nearest bf16, ties to even (PyTorch's rounding).
#[inline(always)]
pub fn to_bf16(x: f32) -> u16 {
    rounded_bits(x.to_bits()) as u16
}

/// [`to_bf16`] on an f32's bits, in the low half of the result, without a
/// branch (so that loops of it vectorise).
#[inline(always)]
fn rounded_bits(bits: u32) -> u32 {
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16;
    let quiet_nan = (bits >> 16) | 0x0040;
    match bits & 0x7fff_ffff > 0x7f80_0000 {
        true => quiet_nan,
        false => rounded,
    }
}

/// The f32 with the same value as the bf16 `h` (exact).
#[inline(always)]
pub fn to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Two bf16 numbers in one `u32`: `even` in the low half.
#[inline(always)]
fn pair(even: f32, odd: f32) -> u32 {
    rounded_bits(even.to_bits()) | rounded_bits(odd.to_bits()) << 16
}

/// The elements of `m` at `(r, c)`, 0 outside it (the padding).
#[inline(always)]
fn at(m: &MatRef, r: usize, c: usize) -> f32 {
    match r < m.rows() && c < m.cols() {
        true => m.data()[r * m.row_stride() + c * m.col_stride()],
        false => 0.0,
    }
}

/// `v` resized to `len`, growing its capacity to exactly the largest length
/// asked so far (not doubling it), as the memory estimate counts it.
fn resize_exact<T: Clone>(v: &mut Vec<T>, len: usize, value: T) {
    v.reserve_exact(len.saturating_sub(v.len()));
    v.resize(len, value);
}

/// A bf16 matrix `(rows, cols)` as rows of pairs (the left operand).
#[derive(Default)]
pub struct Bf16Rows {
    pairs: Vec<u32>,
    rows: usize,
    cols: usize,
}

impl Bf16Rows {
    /// `m` rounded to bf16.
    pub fn from_f32(m: MatRef) -> Self {
        let mut rows = Bf16Rows {
            pairs: vec![0; m.rows() * m.cols().div_ceil(2)],
            rows: m.rows(),
            cols: m.cols(),
        };
        rows.fill(m);
        rows
    }

    /// Become `m` rounded to bf16, whatever its shape; allocates only to
    /// grow past the largest shape held so far.
    pub fn refill(&mut self, m: MatRef) {
        (self.rows, self.cols) = (m.rows(), m.cols());
        resize_exact(&mut self.pairs, m.rows() * m.cols().div_ceil(2), 0);
        self.fill(m);
    }

    /// Overwrite with `m` (of this shape) rounded to bf16; allocates nothing.
    pub fn fill(&mut self, m: MatRef) {
        assert_eq!(
            (m.rows(), m.cols()),
            (self.rows, self.cols),
            "bf16 rows: shape"
        );
        let width = self.cols.div_ceil(2);
        if width == 0 {
            return;
        }
        match (m.col_stride(), m.row_stride()) {
            (1, _) => rows_from_rows(&mut self.pairs, m, width),
            (_, 1) => rows_from_columns(&mut self.pairs, m, width),
            _ => rows_from_any(&mut self.pairs, m, width),
        }
    }

    fn row(&self, r: usize) -> &[u32] {
        let width = self.cols.div_ceil(2);
        &self.pairs[r * width..][..width]
    }
}

/// A bf16 matrix `(rows, cols)` in panels of 16 columns (the right operand).
#[derive(Default)]
pub struct Bf16Panels {
    pairs: Vec<[u32; 16]>,
    rows: usize,
    cols: usize,
}

impl Bf16Panels {
    /// `m` rounded to bf16.
    pub fn from_f32(m: MatRef) -> Self {
        let mut panels = Bf16Panels {
            pairs: vec![[0; 16]; m.cols().div_ceil(16) * m.rows().div_ceil(2)],
            rows: m.rows(),
            cols: m.cols(),
        };
        crate::huge_pages::advise(&panels.pairs);
        panels.fill(m);
        panels
    }

    /// Become `m` rounded to bf16, whatever its shape; allocates only to
    /// grow past the largest shape held so far.
    pub fn refill(&mut self, m: MatRef) {
        (self.rows, self.cols) = (m.rows(), m.cols());
        let len = m.cols().div_ceil(16) * m.rows().div_ceil(2);
        resize_exact(&mut self.pairs, len, [0; 16]);
        self.fill(m);
    }

    /// Overwrite with `m` (of this shape) rounded to bf16; allocates nothing.
    pub fn fill(&mut self, m: MatRef) {
        assert_eq!(
            (m.rows(), m.cols()),
            (self.rows, self.cols),
            "bf16 panels: shape"
        );
        let depth = self.rows.div_ceil(2);
        if depth == 0 {
            return;
        }
        match (m.col_stride(), m.row_stride()) {
            (1, _) => panels_from_rows(&mut self.pairs, m, depth),
            (_, 1) => panels_from_columns(&mut self.pairs, m, depth),
            _ => panels_from_any(&mut self.pairs, m, depth),
        }
    }

    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Bytes held: 64 a group of 16 pairs.
    pub fn byte_len(&self) -> usize {
        64 * self.pairs.len()
    }

    /// Element `(r, c)`, as f32 (exact).
    pub fn value(&self, r: usize, c: usize) -> f32 {
        let pair = self.panel(c / 16)[r / 2][c % 16];
        to_f32((pair >> (16 * (r % 2))) as u16)
    }

    fn panel(&self, q: usize) -> &[[u32; 16]] {
        let depth = self.rows.div_ceil(2);
        &self.pairs[q * depth..][..depth]
    }
}

// The conversions into the two layouts. Each reads its source the way it
// lies in memory: a view with contiguous rows (`col_stride` 1) or columns
// (`row_stride` 1, a transposed view) by slices, in loops that vectorise;
// any other view element by element. All write every element of the
// layout, padding included, so a buffer reused for a smaller shape holds
// no stale values.

/// [`Bf16Rows`] from a view with contiguous rows: pairs of neighbours.
fn rows_from_rows(pairs: &mut [u32], m: MatRef, width: usize) {
    pairs
        .par_chunks_mut(width)
        .enumerate()
        .for_each(|(r, out)| {
            let src = m.row(r);
            simd::vectorised!({
                for (out, two) in out.iter_mut().zip(src.chunks_exact(2)) {
                    *out = pair(two[0], two[1]);
                }
            });
            if src.len() % 2 == 1 {
                out[width - 1] = pair(src[src.len() - 1], 0.0);
            }
        });
}

/// Rows per task of [`rows_from_columns`]: one cache line of each column.
const COLUMN_BLOCK: usize = 16;

/// [`Bf16Rows`] from a view with contiguous columns: columns `2p` and
/// `2p + 1` give pair `p` of every row, read a cache line of rows at a time.
fn rows_from_columns(pairs: &mut [u32], m: MatRef, width: usize) {
    let t = m.t();
    pairs
        .par_chunks_mut(COLUMN_BLOCK * width)
        .enumerate()
        .for_each(|(block, out)| {
            let (first, count) = (block * COLUMN_BLOCK, out.len() / width);
            let column = |c: usize| match c < t.rows() {
                true => &t.row(c)[first..][..count],
                false => &[],
            };
            let mut group = [0u32; COLUMN_BLOCK];
            for p in 0..width {
                let (even, odd) = (column(2 * p), column(2 * p + 1));
                simd::vectorised!({
                    for (i, g) in group[..count].iter_mut().enumerate() {
                        *g = pair(even[i], odd.get(i).copied().unwrap_or(0.0));
                    }
                });
                for (i, g) in group[..count].iter().enumerate() {
                    out[i * width + p] = *g;
                }
            }
        });
}

/// [`Bf16Rows`] from any view, element by element.
fn rows_from_any(pairs: &mut [u32], m: MatRef, width: usize) {
    pairs
        .par_chunks_mut(width)
        .enumerate()
        .for_each(|(r, row)| {
            for (p, out) in row.iter_mut().enumerate() {
                *out = pair(at(&m, r, 2 * p), at(&m, r, 2 * p + 1));
            }
        });
}

/// Panels per task of [`panels_from_rows`]: each source row is read 1 KB at
/// a time. One panel per task would touch one cache line per row, each on
/// another page when rows are long (the LM head's 50257 columns).
const ROW_PANELS: usize = 16;

/// [`Bf16Panels`] from a view with contiguous rows: each group is 16
/// neighbours of row `2p` interleaved with those of row `2p + 1`.
fn panels_from_rows(pairs: &mut [[u32; 16]], m: MatRef, depth: usize) {
    pairs
        .par_chunks_mut(ROW_PANELS * depth)
        .enumerate()
        .for_each(|(block, panels)| {
            let first = 16 * ROW_PANELS * block;
            let width = m.cols().saturating_sub(first).min(16 * ROW_PANELS);
            let part = |r: usize| match r < m.rows() {
                true => &m.row(r)[first..][..width],
                false => &[],
            };
            simd::vectorised!({
                for p in 0..depth {
                    let (even, odd) = (part(2 * p), part(2 * p + 1));
                    for (j, panel) in panels.chunks_mut(depth).enumerate() {
                        interleave(&mut panel[p], lanes(even, j), lanes(odd, j));
                    }
                }
            });
        });
}

/// Elements `16 j..16 j + 16` of `row` (fewer at its end).
#[inline(always)]
fn lanes(row: &[f32], j: usize) -> &[f32] {
    let start = (16 * j).min(row.len());
    &row[start..(start + 16).min(row.len())]
}

/// `group[l] = pair(even[l], odd[l])`, zeros past the ends of the two.
#[inline(always)]
fn interleave(group: &mut [u32; 16], even: &[f32], odd: &[f32]) {
    if let (Ok(even), Ok(odd)) = (<&[f32; 16]>::try_from(even), <&[f32; 16]>::try_from(odd)) {
        for (l, out) in group.iter_mut().enumerate() {
            *out = pair(even[l], odd[l]);
        }
        return;
    }
    for (l, out) in group.iter_mut().enumerate() {
        let value = |s: &[f32]| s.get(l).copied().unwrap_or(0.0);
        *out = pair(value(even), value(odd));
    }
}

/// Pairs per step of [`panels_from_columns`]: 32 elements (128 bytes) of
/// each of a panel's 16 columns, written as 1 KB of the panel.
const COLUMN_PAIRS: usize = 16;

/// [`Bf16Panels`] from a view with contiguous columns: lane `l` of every
/// group of panel `q` is pairs of neighbours down column `16 q + l`. The
/// panel is written [`COLUMN_PAIRS`] groups at a time, each read from all
/// 16 columns: writing all of a lane down a long panel before the next
/// would pass over the whole panel 16 times.
fn panels_from_columns(pairs: &mut [[u32; 16]], m: MatRef, depth: usize) {
    let t = m.t();
    pairs
        .par_chunks_mut(depth)
        .enumerate()
        .for_each(|(q, panel)| {
            let columns: [&[f32]; 16] = std::array::from_fn(|l| match 16 * q + l < t.rows() {
                true => t.row(16 * q + l),
                false => &[],
            });
            simd::vectorised!({
                for (step, groups) in panel.chunks_mut(COLUMN_PAIRS).enumerate() {
                    transpose_pairs(groups, &columns, 2 * COLUMN_PAIRS * step);
                }
            });
        });
}

/// `groups[p][l]` = the pair at elements `first + 2p`, `first + 2p + 1` of
/// `columns[l]` (zeros past a column's end): each column's pairs formed as
/// one contiguous run, then transposed into the groups.
#[inline(always)]
fn transpose_pairs(groups: &mut [[u32; 16]], columns: &[&[f32]; 16], first: usize) {
    let mut by_lane = [[0u32; COLUMN_PAIRS]; 16];
    for (lane, column) in by_lane.iter_mut().zip(columns) {
        let part = &column[first.min(column.len())..];
        match <&[f32; 2 * COLUMN_PAIRS]>::try_from(part.get(..2 * COLUMN_PAIRS).unwrap_or(&[])) {
            Ok(part) => {
                for (p, out) in lane.iter_mut().enumerate() {
                    *out = pair(part[2 * p], part[2 * p + 1]);
                }
            }
            Err(_) => {
                for (p, out) in lane.iter_mut().enumerate() {
                    let value = |i: usize| part.get(i).copied().unwrap_or(0.0);
                    *out = pair(value(2 * p), value(2 * p + 1));
                }
            }
        }
    }
    for (p, group) in groups.iter_mut().enumerate() {
        for (l, out) in group.iter_mut().enumerate() {
            *out = by_lane[l][p];
        }
    }
}

/// [`Bf16Panels`] from any view, element by element.
fn panels_from_any(pairs: &mut [[u32; 16]], m: MatRef, depth: usize) {
    pairs
        .par_chunks_mut(depth)
        .enumerate()
        .for_each(|(q, panel)| {
            for (p, group) in panel.iter_mut().enumerate() {
                for (l, out) in group.iter_mut().enumerate() {
                    let c = 16 * q + l;
                    *out = pair(at(&m, 2 * p, c), at(&m, 2 * p + 1, c));
                }
            }
        });
}

/// A parallel task: up to this many rows of `a` against up to
/// [`TASK_PANELS`] panels of `b`. The task reads its panels from memory once
/// and keeps them in the core's L2 cache (16 to 400 KB for GPT-2's shapes)
/// while all its rows pass over them. Tasks of a few rows instead would each
/// read all of `b`: for the LM head (77 MB in bf16) that is memory's speed,
/// about half of what the products need.
const TASK_ROWS: usize = 256;
/// Panels (16 columns each) per task.
const TASK_PANELS: usize = 4;

/// `dst (m, n) = [dst +] a (m, k) @ b (k, n)` (`dst` row-major), in the
/// order the module docs give.
pub fn matmul(dst: &mut [f32], a: &Bf16Rows, b: &Bf16Panels, mode: Accumulate) {
    let (m, n) = (a.rows, b.cols);
    assert_eq!(a.cols, b.rows, "bf16 matmul: inner dimensions");
    assert!(dst.len() >= m * n, "bf16 matmul: dst too short");
    let panels = n.div_ceil(16);
    let panel_blocks = panels.div_ceil(TASK_PANELS);
    let out = Columns::new(&mut dst[..m * n], n);
    (0..m.div_ceil(TASK_ROWS) * panel_blocks)
        .into_par_iter()
        .for_each(|task| {
            let (rows, block) = (task / panel_blocks, task % panel_blocks);
            simd::dispatch_pairs(Block {
                out: &out,
                a,
                b,
                rows: rows * TASK_ROWS..((rows + 1) * TASK_ROWS).min(m),
                panels: block * TASK_PANELS..((block + 1) * TASK_PANELS).min(panels),
                mode,
            })
        });
}

/// Room for the two operands of a product of f32 matrices taken in bf16:
/// the training step's products (`x @ W`, `dout @ W^T`, `x^T @ dout`) all
/// go through one, so after the first step (the largest shapes) it never
/// grows again.
#[derive(Default)]
pub struct Bf16Scratch {
    lhs: Bf16Rows,
    rhs: Bf16Panels,
}

impl Bf16Scratch {
    /// `dst (m, n) = [dst +] bf16(lhs) (m, k) @ bf16(rhs) (k, n)`, sums in f32
    /// in the order the module docs give (either operand may be a strided or
    /// transposed view).
    pub fn matmul(&mut self, dst: &mut [f32], lhs: MatRef, rhs: MatRef, mode: Accumulate) {
        self.lhs.refill(lhs);
        self.rhs.refill(rhs);
        matmul(dst, &self.lhs, &self.rhs, mode);
    }

    /// `dst (m, n) = bf16(lhs) (m, k) @ b (k, n)`: the right operand packed
    /// already (a weight's bf16 copy), the left one converted here.
    pub fn matmul_packed(&mut self, dst: &mut [f32], lhs: MatRef, b: &Bf16Panels) {
        self.lhs.refill(lhs);
        matmul(dst, &self.lhs, b, Accumulate::Overwrite);
    }

    /// Bytes held now (the largest operands seen so far).
    pub fn held_bytes(&self) -> usize {
        4 * (self.lhs.pairs.capacity() + 16 * self.rhs.pairs.capacity())
    }
}

/// The slow, obviously correct twin of [`matmul`]: one element at a time,
/// the same order of additions, so the same bits.
pub fn matmul_naive(dst: &mut [f32], a: &Bf16Rows, b: &Bf16Panels, mode: Accumulate) {
    let (m, n) = (a.rows, b.cols);
    assert_eq!(a.cols, b.rows, "bf16 matmul: inner dimensions");
    let odd = |p: u32| f32::from_bits(p & 0xffff_0000);
    let even = |p: u32| f32::from_bits(p << 16);
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f32;
            for (p, &x) in a.row(i).iter().enumerate() {
                let y = b.panel(j / 16)[p][j % 16];
                s = (s + odd(x) * odd(y)) + even(x) * even(y);
            }
            let d = &mut dst[i * n + j];
            *d = if mode == Accumulate::Add { *d + s } else { s };
        }
    }
}

/// One task of the product: rows `rows` of `dst`, in its panels `panels`.
struct Block<'a> {
    out: &'a Columns,
    a: &'a Bf16Rows,
    b: &'a Bf16Panels,
    rows: Range<usize>,
    panels: Range<usize>,
    mode: Accumulate,
}

impl PairKernel for Block<'_> {
    type Output = ();

    #[inline(always)]
    fn run<D: PairDot>(self) {
        let Block {
            out,
            a,
            b,
            rows,
            panels,
            mode,
        } = self;
        let mut i = rows.start;
        // Tiles of 8, 4, 2 or 1 rows, each holding its sums in registers.
        while i < rows.end {
            let tile_rows = [8, 4, 2, 1]
                .into_iter()
                .find(|&t| t <= rows.end - i)
                .unwrap_or(1);
            let tile_at = Tile {
                out,
                i,
                panels: panels.clone(),
                mode,
            };
            match tile_rows {
                8 => tile::<D, 8>(tile_at, a, b),
                4 => tile::<D, 4>(tile_at, a, b),
                2 => tile::<D, 2>(tile_at, a, b),
                _ => tile::<D, 1>(tile_at, a, b),
            }
            i += tile_rows;
        }
    }
}

/// Where a tile's sums go: rows `i..` of `out`, in panels `panels`.
struct Tile<'a> {
    out: &'a Columns,
    i: usize,
    panels: Range<usize>,
    mode: Accumulate,
}

/// Rows `i..i + R` of the product in the tile's panels, two panels
/// (32 columns) at a time.
#[inline(always)]
fn tile<D: PairDot, const R: usize>(at: Tile, a: &Bf16Rows, b: &Bf16Panels) {
    let a_rows: [&[u32]; R] = std::array::from_fn(|r| a.row(at.i + r));
    let mut q = at.panels.start;
    while q < at.panels.end {
        if q + 1 < at.panels.end {
            let sums = panel_sums::<D, R, 2>(&a_rows, [b.panel(q), b.panel(q + 1)]);
            store(&at, &sums, q, b.cols);
            q += 2;
        } else {
            let sums = panel_sums::<D, R, 1>(&a_rows, [b.panel(q)]);
            store(&at, &sums, q, b.cols);
            q += 1;
        }
    }
}

/// The sums of `R` rows of pairs against `P` panels.
#[inline(always)]
fn panel_sums<D: PairDot, const R: usize, const P: usize>(
    a: &[&[u32]; R],
    b: [&[[u32; 16]]; P],
) -> [[D; P]; R] {
    let depth = b[0].len();
    let a: [&[u32]; R] = std::array::from_fn(|r| &a[r][..depth]);
    let b: [&[[u32; 16]]; P] = std::array::from_fn(|t| &b[t][..depth]);
    let mut sums = [[D::ZERO; P]; R];
    for p in 0..depth {
        let columns: [D::Pairs; P] = std::array::from_fn(|t| D::load_pairs(&b[t][p]));
        for r in 0..R {
            let row = D::splat_pair(a[r][p]);
            for t in 0..P {
                sums[r][t] = sums[r][t].dot(row, columns[t]);
            }
        }
    }
    sums
}

/// Write (or add) the sums of panels `q..q + P` into the tile's rows of
/// `n` columns.
#[inline(always)]
fn store<D: PairDot, const R: usize, const P: usize>(
    at: &Tile,
    sums: &[[D; P]; R],
    q: usize,
    n: usize,
) {
    for (r, row) in sums.iter().enumerate() {
        for (t, sum) in row.iter().enumerate() {
            let mut lanes = [0.0f32; 16];
            sum.store(&mut lanes);
            let c0 = 16 * (q + t);
            let out = at.out.part(at.i + r, c0, 16.min(n - c0));
            match (<&mut [f32; 16]>::try_from(&mut *out), at.mode) {
                // Whole panels (all but the last) in one vector each.
                (Ok(out), Accumulate::Overwrite) => *out = lanes,
                (Ok(out), Accumulate::Add) => {
                    for (o, s) in out.iter_mut().zip(&lanes) {
                        *o += s;
                    }
                }
                (Err(_), mode) => {
                    for (o, s) in out.iter_mut().zip(&lanes) {
                        *o = if mode == Accumulate::Add { *o + s } else { *s };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use safetensors::SafeTensors;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed, 0);
        (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
    }

    /// `tests/fixtures/bf16.safetensors` (tools/make_bf16_fixtures.py): each
    /// tensor as f32 (bf16 ones widened, exactly) and its shape.
    fn fixture() -> impl Fn(&str) -> (Vec<f32>, Vec<usize>) {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/bf16.safetensors"
        );
        let bytes = std::fs::read(path).expect("tests/fixtures/bf16.safetensors");
        move |name| {
            let file = SafeTensors::deserialize(&bytes).unwrap();
            let t = file.tensor(name).unwrap();
            let values = match t.dtype() {
                safetensors::Dtype::F32 => t
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                safetensors::Dtype::BF16 => t
                    .data()
                    .chunks_exact(2)
                    .map(|b| to_f32(u16::from_le_bytes([b[0], b[1]])))
                    .collect(),
                other => panic!("{name}: unexpected {other:?}"),
            };
            (values, t.shape().to_vec())
        }
    }

    #[test]
    fn rounding_matches_pytorch_and_half_bit_for_bit() {
        let tensor = fixture();
        let (inputs, outputs) = (tensor("convert_in").0, tensor("convert_out").0);
        for (x, want) in inputs.iter().zip(&outputs) {
            let got = to_f32(to_bf16(*x));
            // NaN: PyTorch writes 0x7fc0 or 0xffff depending on its code
            // path; any NaN will do.
            match want.is_nan() {
                true => assert!(got.is_nan(), "{:#010x}: {got}", x.to_bits()),
                false => assert_eq!(got.to_bits(), want.to_bits(), "{:#010x}", x.to_bits()),
            }
        }
        // Every 65521st bit pattern: the same bits as `half`'s conversion.
        for bits in (0..=u32::MAX).step_by(65_521) {
            let x = f32::from_bits(bits);
            assert_eq!(
                to_bf16(x),
                half::bf16::from_f32(x).to_bits(),
                "{bits:#010x}"
            );
        }
    }

    /// Row counts that take every tile size, odd `k`, `n` past a panel edge.
    fn shapes() -> Vec<(usize, usize, usize)> {
        vec![
            (1, 1, 1),
            (3, 37, 21),
            (8, 64, 32),
            (19, 35, 50),
            (45, 130, 17),
            // Two row blocks of tasks, three panel blocks, a part panel.
            (300, 19, 150),
            // A longer `k`, odd.
            (20, 599, 40),
        ]
    }

    #[test]
    fn product_is_the_naive_twin_bit_for_bit() {
        for (m, k, n) in shapes() {
            let (x, w) = (random(m * k, 1), random(k * n, 2));
            let a = Bf16Rows::from_f32(MatRef::new(&x, m, k));
            // `w` read transposed from `(n, k)` memory: the strided path.
            let b = Bf16Panels::from_f32(MatRef::new(&w, n, k).t());
            for mode in [Accumulate::Overwrite, Accumulate::Add] {
                let start = random(m * n, 3);
                let (mut fast, mut slow) = (start.clone(), start);
                matmul(&mut fast, &a, &b, mode);
                matmul_naive(&mut slow, &a, &b, mode);
                assert!(
                    fast == slow,
                    "({m}, {k}, {n}) {mode:?}: differs from matmul_naive"
                );
            }
        }
    }

    /// Worst `|got - want| / bound` over the product, where `bound` is the
    /// module's error bound `(k + 2) 2^-24 sum_p |a b|` (k additions, and the
    /// fixture's own rounding of the exact sum to f32).
    fn worst_against_bound(got: &[f32], want: &[f32], a: &[f32], b: &[f32], k: usize) -> f64 {
        let n = want.len() / (a.len() / k);
        let mut worst = 0.0f64;
        for (idx, (g, w)) in got.iter().zip(want).enumerate() {
            let (i, j) = (idx / n, idx % n);
            let abs: f64 = (0..k)
                .map(|p| {
                    (to_f32(to_bf16(a[i * k + p])) * to_f32(to_bf16(b[p * n + j]))).abs() as f64
                })
                .sum();
            let bound = (k + 2) as f64 * 2f64.powi(-24) * abs;
            worst = worst.max((*g as f64 - *w as f64).abs() / bound.max(f64::MIN_POSITIVE));
        }
        worst
    }

    #[test]
    fn product_matches_pytorch_within_the_derived_bound() {
        let tensor = fixture();
        let ((a, a_shape), (b, _)) = (tensor("a"), tensor("b"));
        let (exact, torch) = (tensor("exact").0, tensor("torch_bf16").0);
        let (m, k) = (a_shape[0], a_shape[1]);
        let n = exact.len() / m;
        let mut got = vec![0.0; m * n];
        let rows = Bf16Rows::from_f32(MatRef::new(&a, m, k));
        matmul(
            &mut got,
            &rows,
            &Bf16Panels::from_f32(MatRef::new(&b, k, n)),
            Accumulate::Overwrite,
        );
        let worst = worst_against_bound(&got, &exact, &a, &b, k);
        eprintln!("bf16 product: worst error {worst:.3} of the bound");
        assert!(worst <= 1.0, "error {worst} times the bound");
        // PyTorch rounds its own f32 sums to bf16: both roundings of nearly
        // the same sum agree, or sit one bf16 step apart across a boundary.
        for (g, t) in got.iter().zip(&torch) {
            let ours = to_f32(to_bf16(*g));
            let step = f32::from_bits(t.to_bits() & 0x7f80_0000) * 2f32.powi(-7);
            assert!((ours - t).abs() <= step, "ours {ours} torch {t}");
        }
    }

    /// `m` as a row-major array.
    fn dense(m: MatRef) -> Vec<f32> {
        (0..m.rows() * m.cols())
            .map(|i| at(&m, i / m.cols(), i % m.cols()))
            .collect()
    }

    /// The exact sums of the products of the rounded operands, rounded to f32.
    fn exact_product(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let round = |x: f32| to_f32(to_bf16(x)) as f64;
        (0..m * n)
            .map(|idx| {
                let (i, j) = (idx / n, idx % n);
                let s: f64 = (0..k)
                    .map(|p| round(a[i * k + p]) * round(b[p * n + j]))
                    .sum();
                s as f32
            })
            .collect()
    }

    /// A linear layer's three products (`out = x @ W`, `dinp = dout @ W^T`,
    /// `dW = x^T @ dout`, the last two through transposed views) through one
    /// scratch: each within the module's bound of the exact sum, and no
    /// buffer moves once the largest shapes have been seen.
    #[test]
    fn training_products_through_one_scratch() {
        let (n, fan_in, fan_out) = (37, 24, 19);
        let (x, w, dout) = (
            random(n * fan_in, 6),
            random(fan_in * fan_out, 7),
            random(n * fan_out, 8),
        );
        let products = [
            (MatRef::new(&x, n, fan_in), MatRef::new(&w, fan_in, fan_out)),
            (
                MatRef::new(&dout, n, fan_out),
                MatRef::new(&w, fan_in, fan_out).t(),
            ),
            (
                MatRef::new(&x, n, fan_in).t(),
                MatRef::new(&dout, n, fan_out),
            ),
        ];
        let mut scratch = Bf16Scratch::default();
        let mut buffers = None;
        for _pass in 0..2 {
            for (lhs, rhs) in products {
                let (m, k, cols) = (lhs.rows(), lhs.cols(), rhs.cols());
                let mut got = vec![0.0; m * cols];
                scratch.matmul(&mut got, lhs, rhs, Accumulate::Overwrite);
                let (a, b) = (dense(lhs), dense(rhs));
                let exact = exact_product(&a, &b, m, k, cols);
                let worst = worst_against_bound(&got, &exact, &a, &b, k);
                assert!(worst <= 1.0, "({m}, {k}, {cols}): {worst} times the bound");
            }
            let now = (scratch.lhs.pairs.as_ptr(), scratch.rhs.pairs.as_ptr());
            assert!(*buffers.get_or_insert(now) == now, "the scratch moved");
        }
    }

    /// Row-major and transposed views (odd sizes, panels cut short, a
    /// column block cut short) and a strided one, each refilled into buffers
    /// that held a larger matrix: the same pairs as element by element.
    #[test]
    fn every_view_converts_as_element_by_element() {
        let big = random(41 * 301, 9);
        let (mut rows, mut panels) = (Bf16Rows::default(), Bf16Panels::default());
        // (41, 300): more than one task of panels_from_rows (256 columns),
        // and a part panel; (40, 37): more than one step of panels_from_columns.
        for (r, c) in [(1, 1), (2, 3), (17, 33), (33, 16), (40, 37), (41, 300)] {
            let data = random(r * c, (r * c) as u64);
            let views = [
                MatRef::new(&data, r, c),
                MatRef::new(&data, c, r).t(),
                MatRef::strided(&big, r, c, 301),
            ];
            for m in views {
                rows.refill(MatRef::new(&big, 40, 37));
                panels.refill(MatRef::new(&big, 37, 40));
                rows.refill(m);
                panels.refill(m);
                let mut want_rows = vec![0; r * c.div_ceil(2)];
                rows_from_any(&mut want_rows, m, c.div_ceil(2));
                let mut want_panels = vec![[0; 16]; c.div_ceil(16) * r.div_ceil(2)];
                panels_from_any(&mut want_panels, m, r.div_ceil(2));
                assert!(rows.pairs == want_rows, "rows of ({r}, {c})");
                assert!(panels.pairs == want_panels, "panels of ({r}, {c})");
            }
        }
    }

    #[test]
    fn refilling_reuses_the_buffers() {
        let (x, y) = (random(6 * 5, 4), random(6 * 5, 5));
        let mut a = Bf16Rows::from_f32(MatRef::new(&x, 6, 5));
        let before = a.pairs.as_ptr();
        a.fill(MatRef::new(&y, 6, 5));
        assert_eq!(a.pairs.as_ptr(), before);
        assert!(a.row(5)[2] == pair(y[29], 0.0) && a.row(0)[0] == pair(y[0], y[1]));
    }
}
