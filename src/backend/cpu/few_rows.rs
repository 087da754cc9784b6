//! Products with a few rows: decoding, where each active sequence brings one
//! row (one token) and every weight is read once for all of them.
//!
//! ```text
//! out (m, n) = [out +] x (m, k) @ W        m <= MAX_ROWS, x row-major
//! ```
//! Decoding is bound by reading the weights from memory, so the whole point
//! is to read each weight once per step whatever `m` is, and to do the `m`
//! multiply-adds it takes part in while it sits in a register. A general
//! matrix product (the `gemm` crate) first copies ("packs") `W` into its own
//! layout on every call: for a handful of rows that copy costs more than the
//! arithmetic. Here `W` is read where it lies, in one of its two layouts:
//!
//! - **`(IN, OUT)` rows** (`W[p, :]` contiguous): a tile of two vectors of
//!   output columns for up to [`ROW_GROUP`] rows is a block of accumulators held in
//!   registers; for each `p`, one load of `W[p, tile]` is multiplied by every
//!   row's `x[r, p]` and added in. `W` is read in strips of rows ([`Walk`]),
//!   each row front to back. `W`'s rows are split into a few contiguous
//!   blocks per thread ([`TASKS_PER_THREAD`]), each one stretch of memory
//!   with its own partial `(m, n)` result; the partials are added in block
//!   order, as the one-row product does.
//! - **`(OUT, IN)` rows** (`W^T`, as the LM head and Hugging Face's Linear
//!   store it, `W[:, j]` contiguous): output `(r, j)` is a dot product; a
//!   block of [`DOT_OUTS`] outputs times [`DOT_ROWS`] rows keeps one vector of
//!   partial sums each, and the block's weight rows stay in the
//!   L1 cache while every group of rows passes over them.
//!
//! For `(OUT, IN)` rows the output columns are split into a few contiguous
//! ranges per thread, each again one stretch of `W`; every output is one dot
//! product, so the split changes no number. The threads take the blocks and
//! ranges as they come free. The order of every sum is fixed by the code
//! and the thread count: the same numbers for
//! a given thread count (and, for `(OUT, IN)`, for any) and instruction set
//! level: both kernels are written once over a [`Vector`] of the level's
//! width and run through [`simd::dispatch`]. A row's result does not depend
//! on the other rows beside it, so a sequence decodes to the same numbers
//! alone as in a batch of up to [`MAX_ROWS`].

use super::math::mul_add;
use super::matmul::{Accumulate, Columns, MatRef, TASKS_PER_THREAD, split_rows_sum};
use super::simd::{self, Kernel, Vector, prefetch};
use rayon::prelude::*;

/// The most rows this kernel takes; larger products go to `gemm`.
pub const MAX_ROWS: usize = 16;

/// Vectors of output columns per register tile of the `(IN, OUT)` kernel:
/// with [`ROW_GROUP`] rows, 16 vector registers of accumulators.
const TILE_VECTORS: usize = 2;
/// The widest tile, in floats (two 16-lane vectors).
const MAX_TILE: usize = 32;
/// Rows that share one pass over a tile of `W` in the `(IN, OUT)` kernel.
const ROW_GROUP: usize = 8;
/// Outputs and rows of one block of the `(OUT, IN)` kernel (16 accumulators).
const DOT_OUTS: usize = 4;
const DOT_ROWS: usize = 4;
/// Outputs of one block of the `(OUT, IN)` kernel for one or two rows.
const WIDE_DOT_OUTS: usize = 8;

/// Whether [`matmul`] handles this product: a few rows of `x`, each
/// contiguous, and `W` with contiguous rows or contiguous columns.
pub fn applies(x: &MatRef, w: &MatRef) -> bool {
    (1..=MAX_ROWS).contains(&x.rows())
        && x.col_stride() == 1
        && (w.col_stride() == 1 || w.row_stride() == 1)
}

/// `dst (m, n) = [dst +] x @ w` (row-major `dst`) for a product [`applies`] accepts.
pub fn matmul(dst: &mut [f32], x: MatRef, w: MatRef, mode: Accumulate) {
    matmul_walking(dst, x, w, mode, walk())
}

/// [`matmul`], with `(IN, OUT)` weights read in the given walk.
fn matmul_walking(dst: &mut [f32], x: MatRef, w: MatRef, mode: Accumulate, walk: Walk) {
    assert!(applies(&x, &w), "few_rows::matmul: unsupported product");
    let (m, k, n) = (x.rows(), x.cols(), w.cols());
    assert_eq!(w.rows(), k, "matmul: inner dimensions differ");
    assert!(dst.len() >= m * n, "matmul: destination too small");
    let rows: [&[f32]; MAX_ROWS] = std::array::from_fn(|r| match r < m {
        true => x.row(r),
        false => &[],
    });
    let rows = &rows[..m];
    if w.col_stride() == 1 {
        return split_rows_sum(dst, m * n, k, SPLIT, mode, |block, partial| {
            let partial = &Columns::new(partial, n);
            simd::dispatch(InOut {
                partial,
                rows,
                w,
                walk,
                block,
            });
        });
    }
    let per_part = n
        .div_ceil(rayon::current_num_threads() * TASKS_PER_THREAD)
        .next_multiple_of(MAX_TILE);
    let out = Columns::new(dst, n);
    (0..n.div_ceil(per_part)).into_par_iter().for_each(|part| {
        let cols = part * per_part..((part + 1) * per_part).min(n);
        let out = &out;
        simd::dispatch(DotOutIn {
            out,
            rows,
            w,
            cols,
            mode,
        });
    });
}

/// [`rows_times_in_out`] for [`simd::dispatch`].
struct InOut<'a> {
    partial: &'a Columns,
    rows: &'a [&'a [f32]],
    w: MatRef<'a>,
    walk: Walk,
    block: std::ops::Range<usize>,
}

impl Kernel for InOut<'_> {
    type Output = ();
    #[inline(always)]
    fn run<V: Vector>(self) {
        rows_times_in_out::<V>(self.partial, self.rows, self.w, self.walk, self.block)
    }
}

/// [`rows_dot_out_in`] for [`simd::dispatch`].
struct DotOutIn<'a> {
    out: &'a Columns,
    rows: &'a [&'a [f32]],
    w: MatRef<'a>,
    cols: std::ops::Range<usize>,
    mode: Accumulate,
}

impl Kernel for DotOutIn<'_> {
    type Output = ();
    #[inline(always)]
    fn run<V: Vector>(self) {
        rows_dot_out_in::<V>(self.out, self.rows, self.w, self.cols, self.mode)
    }
}

/// Blocks of `W`'s rows in the `(IN, OUT)` kernel come in multiples of
/// this: where the blocks split decides the order of the sums, so it is the
/// same on every CPU.
const SPLIT: usize = 32;

/// How the `(IN, OUT)` kernel walks its block of `W`. `W[p, :]` rows lie
/// `OUT` floats apart: walking one tile down all of them would touch a new
/// page at every step. A strip of `strip` rows is walked tile by tile
/// instead, so each of its rows is read front to back, as the memory
/// prefetchers expect; between strips the sums wait in the partial result
/// (the same sums, in the same order, whatever the strip). `prefetch_tiles`:
/// how far ahead along a row the kernel asks for the weights it will need,
/// if at all.
#[derive(Clone, Copy)]
struct Walk {
    strip: usize,
    prefetch_tiles: Option<usize>,
}

/// The walk for this CPU, measured on GPT-2's shapes with 2 threads:
/// - Intel Xeon: strips of 32 rows read faster than 8 or 64, and asking 8
///   tiles ahead helps (its prefetchers follow a strip's rows too late);
/// - AMD EPYC (Zen 4), f32 decoding of GPT-2 (`bench sample --model` an f32
///   GGUF): 33.9 tok/s with that walk, 47 with strips of 8 rows, 51 with 8
///   rows and no asking: its prefetchers follow 8 rows' streams, not 32.
fn walk() -> Walk {
    static WALK: std::sync::OnceLock<Walk> = std::sync::OnceLock::new();
    *WALK.get_or_init(|| match simd::amd() {
        true => Walk {
            strip: 8,
            prefetch_tiles: None,
        },
        false => Walk {
            strip: SPLIT,
            prefetch_tiles: Some(8),
        },
    })
}

/// `partial = x[:, block] @ W[block, :]` for `W` stored as `(IN, OUT)` rows:
/// strip by strip of the block's rows, every row group and tile adds the
/// strip's part of its sums (the first strip starts them from 0).
#[inline(always)]
fn rows_times_in_out<V: Vector>(
    partial: &Columns,
    rows: &[&[f32]],
    w: MatRef,
    walk: Walk,
    block: std::ops::Range<usize>,
) {
    let n = w.cols();
    let tile_width = TILE_VECTORS * V::LANES;
    let ahead = walk.prefetch_tiles;
    for p0 in block.clone().step_by(walk.strip) {
        let strip = p0..(p0 + walk.strip).min(block.end);
        let mode = match p0 == block.start {
            true => Accumulate::Overwrite,
            false => Accumulate::Add,
        };
        for group in (0..rows.len()).step_by(ROW_GROUP) {
            let group_rows = &rows[group..(group + ROW_GROUP).min(rows.len())];
            for c0 in (0..n).step_by(tile_width) {
                let width = tile_width.min(n - c0);
                let tile = Tile {
                    out: partial,
                    row0: group,
                    c0,
                    width,
                    mode,
                };
                let strip = strip.clone();
                match group_rows.len() {
                    8 => tile_in_out::<V, 8>(group_rows, w, strip, tile, ahead),
                    7 => tile_in_out::<V, 7>(group_rows, w, strip, tile, ahead),
                    6 => tile_in_out::<V, 6>(group_rows, w, strip, tile, ahead),
                    5 => tile_in_out::<V, 5>(group_rows, w, strip, tile, ahead),
                    4 => tile_in_out::<V, 4>(group_rows, w, strip, tile, ahead),
                    3 => tile_in_out::<V, 3>(group_rows, w, strip, tile, ahead),
                    2 => tile_in_out::<V, 2>(group_rows, w, strip, tile, ahead),
                    _ => tile_in_out::<V, 1>(group_rows, w, strip, tile, ahead),
                }
            }
        }
    }
}

/// A block of results in `dst`: rows from `row0`, `width` columns from
/// `c0`, and whether the block's sums start from `dst` (`Add`) or from 0.
#[derive(Clone, Copy)]
struct Tile<'a> {
    out: &'a Columns,
    row0: usize,
    c0: usize,
    width: usize,
    mode: Accumulate,
}

impl Tile<'_> {
    /// What row `r`'s sums start from: its part of `dst`, or zeros.
    fn start<const W: usize>(&self, r: usize) -> [f32; W] {
        let mut start = [0.0f32; W];
        if self.mode == Accumulate::Add {
            start[..self.width].copy_from_slice(self.out.part(self.row0 + r, self.c0, self.width));
        }
        start
    }

    /// Write row `r`'s sums.
    fn finish(&self, r: usize, sums: &[f32]) {
        self.out
            .part(self.row0 + r, self.c0, self.width)
            .copy_from_slice(&sums[..self.width]);
    }
}

/// `dst[r, c0..] (+)= sum_{p in strip} x[r, p] * W[p, c0..]` for `R` rows
/// and `width` columns, at most a tile, in registers. A full tile runs the
/// fixed-size loop of vector multiply-adds; the last, narrower tile of a
/// row runs a plain one.
#[inline(always)]
fn tile_in_out<V: Vector, const R: usize>(
    rows: &[&[f32]],
    w: MatRef,
    strip: std::ops::Range<usize>,
    tile: Tile,
    prefetch_tiles: Option<usize>,
) {
    let (c0, width) = (tile.c0, tile.width);
    let tile_width = TILE_VECTORS * V::LANES;
    let x: [&[f32]; R] = std::array::from_fn(|r| &rows[r][strip.clone()]);
    let (data, stride) = (w.data(), w.row_stride());
    if width < tile_width {
        let mut sums: [[f32; MAX_TILE]; R] = std::array::from_fn(|r| tile.start(r));
        for (i, p) in strip.enumerate() {
            let wp = &data[p * stride + c0..][..width];
            for r in 0..R {
                for (a, &wv) in sums[r].iter_mut().zip(wp) {
                    *a = mul_add(x[r][i], wv, *a);
                }
            }
        }
        return sums
            .iter()
            .enumerate()
            .for_each(|(r, row)| tile.finish(r, row));
    }
    let mut acc = [[V::ZERO; TILE_VECTORS]; R];
    if tile.mode == Accumulate::Add {
        for (r, acc) in acc.iter_mut().enumerate() {
            let part = V::chunks(tile.out.part(tile.row0 + r, c0, tile_width));
            *acc = std::array::from_fn(|v| V::load(&part[v]));
        }
    }
    for (i, p) in strip.enumerate() {
        if let Some(tiles) = prefetch_tiles {
            let ahead = p * stride + c0 + tiles * tile_width;
            prefetch(data, ahead);
            prefetch(data, ahead + tile_width / 2);
        }
        let wp = V::chunks(&data[p * stride + c0..][..tile_width]);
        let wv: [V; TILE_VECTORS] = std::array::from_fn(|v| V::load(&wp[v]));
        for r in 0..R {
            let xv = V::splat(x[r][i]);
            for v in 0..TILE_VECTORS {
                acc[r][v] = acc[r][v].mul_add(xv, wv[v]);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate() {
        let part = V::chunks_mut(tile.out.part(tile.row0 + r, c0, tile_width));
        for (v, &a) in acc.iter().enumerate() {
            a.store(&mut part[v]);
        }
    }
}

/// Columns `cols` of `x @ W` for `W` stored as `(OUT, IN)` rows (`w` is the
/// transposed view): a dot product per output. One or two rows take more
/// outputs per block, so that enough independent sums are in flight to hide
/// the multiply-add latency; each output's sum is the same either way.
#[inline(always)]
fn rows_dot_out_in<V: Vector>(
    out: &Columns,
    rows: &[&[f32]],
    w: MatRef,
    cols: std::ops::Range<usize>,
    mode: Accumulate,
) {
    match rows.len() {
        1 | 2 => dot_blocks::<V, WIDE_DOT_OUTS>(out, rows, w, cols, mode),
        _ => dot_blocks::<V, DOT_OUTS>(out, rows, w, cols, mode),
    }
}

/// [`rows_dot_out_in`] in blocks of `OUTS` outputs.
#[inline(always)]
fn dot_blocks<V: Vector, const OUTS: usize>(
    out: &Columns,
    rows: &[&[f32]],
    w: MatRef,
    cols: std::ops::Range<usize>,
    mode: Accumulate,
) {
    let (k, stride) = (w.rows(), w.col_stride());
    let data = w.data();
    for j0 in cols.clone().step_by(OUTS) {
        let outs = OUTS.min(cols.end - j0);
        let wrows: [&[f32]; OUTS] =
            std::array::from_fn(|j| &data[(j0 + j.min(outs - 1)) * stride..][..k]);
        for r0 in (0..rows.len()).step_by(DOT_ROWS) {
            let block = &rows[r0..(r0 + DOT_ROWS).min(rows.len())];
            let tile = Tile {
                out,
                row0: r0,
                c0: j0,
                width: outs,
                mode,
            };
            // The first group of rows asks for the next block's weight rows
            // (contiguous when `W` is) while it reads this one's. Not for the
            // wide blocks of one or two rows: there the hardware keeps up on
            // its own, and asking slowed GPT-2's LM head from 27 to 17 GB/s
            // (Intel Xeon, 2 threads).
            let ahead =
                (OUTS == DOT_OUTS && r0 == 0 && stride == k).then(|| (data, (j0 + OUTS) * stride));
            match block.len() {
                4 => dots::<V, 4, OUTS>(block, &wrows, tile, ahead),
                3 => dots::<V, 3, OUTS>(block, &wrows, tile, ahead),
                2 => dots::<V, 2, OUTS>(block, &wrows, tile, ahead),
                _ => dots::<V, 1, OUTS>(block, &wrows, tile, ahead),
            }
        }
    }
}

/// `dot(x[r], w[j])` for `R` rows and `OUTS` weight rows, each kept as a
/// vector of partial sums, added pairwise at the end (then the tail).
/// `ahead`: where in `data` the next block's weights start, to prefetch them
/// one vector per weight row per step.
#[inline(always)]
fn dots<V: Vector, const R: usize, const OUTS: usize>(
    rows: &[&[f32]],
    w: &[&[f32]; OUTS],
    tile: Tile,
    ahead: Option<(&[f32], usize)>,
) {
    let k = w[0].len();
    let chunks = k / V::LANES;
    // Every row cut to the same number of whole vectors, so the loop below
    // indexes them without bounds checks (which would keep the accumulators
    // out of registers).
    let x: [&[V::Array]; R] = std::array::from_fn(|r| &V::chunks(&rows[r][..k])[..chunks]);
    let wc: [&[V::Array]; OUTS] = std::array::from_fn(|j| &V::chunks(w[j])[..chunks]);
    let mut acc = [[V::ZERO; OUTS]; R];
    for i in 0..chunks {
        if let Some((data, at)) = ahead {
            for q in 0..OUTS {
                prefetch(data, at + (i * OUTS + q) * V::LANES);
            }
        }
        let wv: [V; OUTS] = std::array::from_fn(|j| V::load(&wc[j][i]));
        for r in 0..R {
            let xv = V::load(&x[r][i]);
            for j in 0..OUTS {
                acc[r][j] = acc[r][j].mul_add(xv, wv[j]);
            }
        }
    }
    for r in 0..R {
        let mut sums: [f32; OUTS] = tile.start(r);
        for j in 0..OUTS {
            let mut s = acc[r][j].sum();
            for p in chunks * V::LANES..k {
                s = mul_add(rows[r][p], w[j][p], s);
            }
            sums[j] += s;
        }
        tile.finish(r, &sums);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::matmul::matmul_naive;
    use crate::backend::cpu::matmul::tests::random;

    /// Each CPU's walk over `(IN, OUT)` weights gives the same bits.
    #[test]
    fn every_walk_gives_the_same_numbers() {
        let (k, n) = (300, 70);
        let w = random(k * n, 4);
        let walks = [
            Walk {
                strip: 8,
                prefetch_tiles: None,
            },
            Walk {
                strip: SPLIT,
                prefetch_tiles: Some(8),
            },
            Walk {
                strip: 5,
                prefetch_tiles: Some(1),
            },
        ];
        for m in [1, 3, 9] {
            let x = random(m * k, 5);
            let results: Vec<Vec<f32>> = walks
                .iter()
                .map(|&walk| {
                    let mut dst = random(m * n, 6);
                    let (x, w) = (MatRef::new(&x, m, k), MatRef::new(&w, k, n));
                    matmul_walking(&mut dst, x, w, Accumulate::Add, walk);
                    dst
                })
                .collect();
            assert!(results.iter().all(|r| r == &results[0]), "{m} rows");
        }
    }

    /// Every row count, both layouts, both modes, sizes with ragged tails
    /// (k and n not multiples of the vector width or the tiles).
    #[test]
    fn matches_naive_for_every_row_count_and_layout() {
        let (k, n) = (133, 201);
        let w_in_out = random(k * n, 1);
        let w_out_in = random(n * k, 2);
        for m in 1..=MAX_ROWS {
            let x = random(m * k, 3 + m as u64);
            let start = random(m * n, 40 + m as u64);
            let lhs = MatRef::new(&x, m, k);
            for w in [
                MatRef::new(&w_in_out, k, n),
                MatRef::new(&w_out_in, n, k).t(),
            ] {
                for mode in [Accumulate::Overwrite, Accumulate::Add] {
                    let (mut fast, mut slow) = (start.clone(), start.clone());
                    matmul(&mut fast, lhs, w, mode);
                    matmul_naive(&mut slow, lhs, w, mode);
                    let worst = (fast.iter().zip(&slow))
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f32::max);
                    assert!(worst < 1e-4, "m {m}, {mode:?}: max diff {worst}");
                }
            }
        }
    }

    /// Each row of a product comes out the same alone as among others, for
    /// both layouts: batched decoding gives each sequence its own numbers.
    #[test]
    fn a_row_is_the_same_alone_as_in_a_batch() {
        let (m, k, n) = (7, 300, 333);
        let x = random(m * k, 11);
        let w_in_out = random(k * n, 12);
        let w_out_in = random(n * k, 13);
        for w in [
            MatRef::new(&w_in_out, k, n),
            MatRef::new(&w_out_in, n, k).t(),
        ] {
            let mut batch = vec![0.0; m * n];
            matmul(&mut batch, MatRef::new(&x, m, k), w, Accumulate::Overwrite);
            for r in 0..m {
                let mut alone = vec![0.0; n];
                let row = MatRef::new(&x[r * k..], 1, k);
                matmul(&mut alone, row, w, Accumulate::Overwrite);
                assert_eq!(alone, batch[r * n..][..n], "row {r}");
            }
        }
    }

    /// `(OUT, IN)` products give the same numbers on one thread as on
    /// several; `(IN, OUT)` ones the same numbers run after run on a given
    /// thread count (their partials are added per thread), and close ones on
    /// another.
    #[test]
    fn results_are_fixed_by_the_thread_count() {
        let (m, k, n) = (5, 296, 300);
        let x = random(m * k, 7);
        let w = random(k * n, 8);
        let run = |threads: usize, in_out: bool| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let w = match in_out {
                true => MatRef::new(&w, k, n),
                false => MatRef::new(&w, n, k).t(),
            };
            let mut out = random(m * n, 9);
            pool.install(|| matmul(&mut out, MatRef::new(&x, m, k), w, Accumulate::Add));
            out
        };
        assert_eq!(run(1, false), run(3, false));
        assert_eq!(run(3, true), run(3, true));
        let (one, three) = (run(1, true), run(3, true));
        assert_ne!(one, three, "three blocks of rows should round differently");
        let worst = (one.iter().zip(&three))
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-4, "max diff {worst}");
    }
}
