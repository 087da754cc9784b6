//! Causal multi-head scaled dot-product self-attention, with grouped-query
//! attention (GQA: several query heads share one key/value head).
//!
//! The queries come from `q: (B, T, ·)` and the keys and values from
//! `kv: (B, P + T, ·)`, rows `q_stride` and `kv_stride` floats apart. In a
//! row of `q`, query head `h` owns channels `h*hs .. (h+1)*hs` (`hs = C / NH`);
//! in a row of `kv`, key head `g` starts at `k_offset + g*hs` and value head
//! `g` at `k_offset + KVC + g*hs` (`KVC = NKV * hs`). Query head `h` reads
//! key/value head `g = h / (NH / NKV)`; GPT-2 has `NKV = NH`. In training
//! both are the `c_attn` projection's output `qkv: (B, T, C + 2 KVC)`, laid
//! out `[q | k | v]`. When decoding, the queries are the `T` new positions
//! `P..P + T`, and `kv` holds the keys and values of every position seen:
//! the KV cache (the GPT's `qkv` rows, or a Llama's cache of only its
//! key/value heads). For each batch row, head and query position `t`:
//!
//! ```text
//! s[t2] = q[t] . k[t2] / sqrt(hs)               for t2 <= t (causal), else -inf
//! P[t2] = softmax(s)[t2] = exp(s[t2] - lse)     lse = log sum_t2 exp(s[t2]): (B, NH, T), saved
//! out[t] = sum_t2 drop(P)[t2] v[t2]             out: (B, T, C), heads side by side
//!
//! backward, with D = drop(P), per head, as matrices over positions:
//! dV = D^T dY                                  dD = dY V^T
//! dP = dD * mask / (1 - p)
//! dS[t, :] = P[t, :] * (dP[t, :] - sum_j P[t, j] dP[t, j])   (softmax backward)
//! dQ = dS K / sqrt(hs)                         dK = dS^T Q / sqrt(hs)
//! ```
//! A shared key/value head's `dK` and `dV` are the sums over the query heads
//! of its group (the first head of a group writes them, the others add).
//! Only `lse`, one number per query, is kept for backward, which recomputes
//! `P = exp(Q K^T / sqrt(hs) - lse)`: one more small product instead of
//! storing `(B, NH, T, T)` probabilities per layer (7 GB for GPT-2 at T = 1024).
//! Each head's products are small matrix products on strided views of `qkv`
//! (a head's queries are `T` rows of `hs` floats, `q_stride` apart), run with `gemm`
//! on one thread; work is split across threads by batch row. The masked upper
//! triangle is computed and then zeroed: twice the arithmetic of a causal
//! loop, but in matrix-product form it is still several times faster. A
//! single query (decoding one token) is a row of dot products instead, with
//! the work split across threads by batch row and key/value head (the query
//! heads that share one read its cached rows together).

use super::math::{axpy, dot, exp, max, sum_map, sum_map3};
use super::matmul::{Accumulate, MatRef, matmul_into};
use super::simd::{prefetch, vectorised};
use crate::backend::{AttentionDims, Dropout};
use rayon::prelude::*;
use std::ops::Range;

/// Scratch floats [`forward`] and [`backward`] need for `d`.
pub fn scratch_len(d: AttentionDims) -> usize {
    // Three `(T, P + T)` tables per batch row, or for a single query one
    // row of scores per head (the heads run in parallel).
    d.b * (3 * d.t).max(d.n_head) * d.keys()
}

/// Softmax of the first `t1 + 1` entries of `row` (the positions query `t1`
/// may see); the rest are set to 0. Returns the log-sum-exp of those scores.
/// Inlined, so that it is compiled at the caller's SIMD level.
#[inline(always)]
fn causal_softmax(row: &mut [f32], t1: usize) -> f32 {
    vectorised!({
        let (seen, masked) = row.split_at_mut(t1 + 1);
        let max = max(seen);
        seen.iter_mut().for_each(|p| *p = exp(*p - max));
        let sum = sum_map(seen, |p| p);
        let inv = 1.0 / sum;
        seen.iter_mut().for_each(|p| *p *= inv);
        masked.fill(0.0);
        max + sum.ln()
    })
}

/// Scores to probabilities again, from the saved log-sum-exp of each row.
fn causal_probs_from_lse(probs: &mut [f32], lse: &[f32], t: usize) {
    vectorised!({
        for (t1, (row, &l)) in probs.chunks_exact_mut(t).zip(lse).enumerate() {
            row[..=t1].iter_mut().for_each(|s| *s = exp(*s - l));
            row[t1 + 1..].fill(0.0);
        }
    })
}

/// The attention weights actually applied to `v`: the probabilities, or their
/// dropped-out copy written into `scratch`.
fn dropped<'a>(
    probs: &'a [f32],
    scratch: &'a mut [f32],
    dropout: Option<&Dropout>,
    first_index: usize,
) -> &'a [f32] {
    match dropout {
        None => probs,
        Some(d) => {
            vectorised!({
                for (i, (w, p)) in scratch.iter_mut().zip(probs).enumerate() {
                    *w = p * d.factor(first_index + i);
                }
            });
            &scratch[..probs.len()]
        }
    }
}

/// Head `h` of one batch row: its queries (`T` rows of `q`), and the keys and
/// values of its key/value head (all `P + T` rows of `kv`), as strided views.
fn head_views<'a>(q: &'a [f32], kv: &'a [f32], d: AttentionDims, h: usize) -> [MatRef<'a>; 3] {
    let (hs, keys) = (d.head_size(), d.keys());
    let (k, v) = (d.key_column(h), d.value_column(h));
    [
        MatRef::strided(&q[h * hs..], d.t, hs, d.q_stride),
        MatRef::strided(&kv[k..], keys, hs, d.kv_stride),
        MatRef::strided(&kv[v..], keys, hs, d.kv_stride),
    ]
}

/// Key (and value) rows ahead of the one being read that the CPU is asked
/// to fetch. A head reads 64 floats of each cached row, rows `kv_stride`
/// floats apart: a stride across pages that the hardware prefetchers do not
/// follow (measured on GPT-2, 8 caches of 116 to 216 positions: 1.2x to 1.3x).
const AHEAD: usize = 6;

/// One query (the last position) of each of the query heads `heads`, which
/// share one key/value head, as dot products: `out (heads, hs)`; `scores`
/// holds a row of `longest >= P + 1` floats a head, and `lse` one float a
/// head. Each cached key and value row is read once for all the heads
/// (a Llama's group of query heads: 8 in TinyLlama), where a loop per head
/// would read it once per head.
fn group_queries(
    (out, lse, scores): (&mut [f32], &mut [f32], &mut [f32]),
    (q, kv): (&[f32], &[f32]),
    d: AttentionDims,
    heads: Range<usize>,
) {
    vectorised!({
        let (hs, keys, stride) = (d.head_size(), d.keys(), d.kv_stride);
        let longest = scores.len() / heads.len();
        let scale = 1.0 / (hs as f32).sqrt();
        let (k, v) = (d.key_column(heads.start), d.value_column(heads.start));
        for t2 in 0..keys {
            for line in (0..hs).step_by(16) {
                prefetch(kv, (t2 + AHEAD) * stride + k + line); // 16 floats a cache line
            }
            let key = &kv[t2 * stride + k..][..hs];
            for (row, h) in scores.chunks_exact_mut(longest).zip(heads.clone()) {
                row[t2] = dot(&q[h * hs..][..hs], key) * scale;
            }
        }
        for (row, lse) in scores.chunks_exact_mut(longest).zip(lse.iter_mut()) {
            *lse = causal_softmax(&mut row[..keys], d.pos);
        }
        out.fill(0.0);
        for t2 in 0..keys {
            for line in (0..hs).step_by(16) {
                prefetch(kv, (t2 + AHEAD) * stride + v + line);
            }
            let value = &kv[t2 * stride + v..][..hs];
            for (out, row) in out.chunks_exact_mut(hs).zip(scores.chunks_exact(longest)) {
                axpy(out, row[t2], value);
            }
        }
    })
}

/// Fills `out: (B, T, C)` and `lse: (B, NH, T)` from the queries `q` and the
/// keys and values `kv`; `scratch` holds [`scratch_len`] floats.
pub fn forward(
    out: &mut [f32],
    lse: &mut [f32],
    scratch: &mut [f32],
    (q, kv): (&[f32], &[f32]),
    d: AttentionDims,
    dropout: Option<&Dropout>,
) {
    let (t, c, nh, hs, keys) = (d.t, d.c, d.n_head, d.head_size(), d.keys());
    assert!(
        d.pos == 0 || d.b == 1,
        "only one sequence continues a cache"
    );
    if t == 1 && dropout.is_none() {
        return single_queries(out, lse, scratch, (q, kv), d);
    }
    let scale = 1.0 / (hs as f32).sqrt();
    let row_att = nh * t * keys;
    out[..d.b * t * c]
        .par_chunks_mut(t * c)
        .zip(lse[..d.b * nh * t].par_chunks_mut(nh * t))
        .zip(scratch[..scratch_len(d)].par_chunks_mut(3 * t * keys))
        .zip(q.par_chunks(t * d.q_stride).take(d.b))
        .zip(kv.par_chunks(keys * d.kv_stride).take(d.b))
        .enumerate()
        .for_each(|(b, ((((out, lse), scratch), q), kv))| {
            let (probs, drop_scratch) = scratch.split_at_mut(t * keys);
            for h in 0..nh {
                let [q, k, v] = head_views(q, kv, d, h);
                matmul_into(probs, keys, q, k.t(), Accumulate::Overwrite, scale, false);
                for (t1, row) in probs.chunks_exact_mut(keys).enumerate() {
                    lse[h * t + t1] = causal_softmax(row, d.pos + t1);
                }
                let first = b * row_att + h * t * keys;
                let weights = dropped(probs, drop_scratch, dropout, first);
                matmul_into(
                    &mut out[h * hs..],
                    c,
                    MatRef::new(weights, t, keys),
                    v,
                    Accumulate::Overwrite,
                    1.0,
                    false,
                );
            }
        });
}

/// One query per batch row (decoding), all rows over one buffer of keys
/// and values laid out as `d` says.
fn single_queries(
    out: &mut [f32],
    lse: &mut [f32],
    scratch: &mut [f32],
    (q, kv): (&[f32], &[f32]),
    d: AttentionDims,
) {
    let keys = d.keys();
    let row = |b: usize| (&q[b * d.q_stride..], &kv[b * keys * d.kv_stride..], d);
    queries_by_head((out, lse, scratch), (d.b, d.n_head, d.c), keys, row);
}

/// The longest cache of a decoding batch, in positions.
fn longest(caches: &[(&[f32], AttentionDims)]) -> usize {
    caches.iter().map(|(_, d)| d.keys()).max().unwrap_or(0)
}

/// Floats of scratch [`decode`] needs: one row of scores per (sequence,
/// head), as long as the longest cache.
pub fn decode_scratch_len(caches: &[(&[f32], AttentionDims)]) -> usize {
    let heads = caches.first().map_or(0, |(_, d)| d.n_head);
    caches.len() * heads * longest(caches)
}

/// One query per sequence, each over its own cache (a decoding batch);
/// `out: (n, C)`, `lse: (n, NH)`, `q` rows `q_stride` apart.
pub fn decode(
    out: &mut [f32],
    lse: &mut [f32],
    scratch: &mut [f32],
    q: &[f32],
    caches: &[(&[f32], AttentionDims)],
) {
    let Some((_, first)) = caches.first() else {
        return;
    };
    let row = |i: usize| {
        let (kv, d) = caches[i];
        assert!(d.b == 1 && d.t == 1, "one query per sequence");
        (&q[i * d.q_stride..], kv, d)
    };
    let shape = (caches.len(), first.n_head, first.c);
    queries_by_head((out, lse, scratch), shape, longest(caches), row);
}

/// `n` rows of one query each, `nh` heads of `C / nh` channels: the query
/// heads of a row that share a key/value head are one task of
/// [`group_queries`] (split further while there are fewer tasks than
/// threads), all in one parallel loop, each head with its own `longest`
/// floats of `scratch` for the scores. `row(i)` gives row `i`'s query row,
/// its keys and values, and their layout.
fn queries_by_head<'a>(
    (out, lse, scratch): (&mut [f32], &mut [f32], &mut [f32]),
    (n, nh, c): (usize, usize, usize),
    longest: usize,
    row: impl Fn(usize) -> (&'a [f32], &'a [f32], AttentionDims) + Sync,
) {
    if n == 0 {
        return;
    }
    let per_task = heads_per_task(row(0).2.group(), n * nh);
    out[..n * c]
        .par_chunks_mut(per_task * c / nh)
        .zip(lse[..n * nh].par_chunks_mut(per_task))
        .zip(scratch[..n * nh * longest].par_chunks_mut(per_task * longest))
        .enumerate()
        .for_each(|(task, ((out, lse), scores))| {
            let first = task * per_task;
            let (q, kv, d) = row(first / nh);
            let heads = first % nh..first % nh + per_task;
            group_queries((out, lse, scores), (q, kv), d, heads);
        });
}

/// Query heads a task of [`queries_by_head`] takes: a whole group (those
/// sharing a key/value head), or the largest divisor of it that still
/// gives every thread a task when there are `heads` in all.
fn heads_per_task(group: usize, heads: usize) -> usize {
    let threads = rayon::current_num_threads();
    (1..=group)
        .rev()
        .find(|&g| group.is_multiple_of(g) && heads / g >= threads)
        .unwrap_or(1)
}

/// Through dropout and the softmax, row by row: `dp` (the gradient of the
/// applied weights) becomes `dS`, the gradient of the scores.
fn softmax_backward(
    dp: &mut [f32],
    probs: &[f32],
    t: usize,
    dropout: Option<&Dropout>,
    first: usize,
) {
    vectorised!({
        for (t1, (ds, p)) in dp
            .chunks_exact_mut(t)
            .zip(probs.chunks_exact(t))
            .enumerate()
        {
            if let Some(drop) = dropout {
                for (t2, g) in ds[..=t1].iter_mut().enumerate() {
                    *g *= drop.factor(first + t1 * t + t2);
                }
            }
            let weighted = sum_map3(&ds[..=t1], &p[..=t1], p, |g, p, _| g * p);
            for (g, p) in ds[..=t1].iter_mut().zip(&p[..=t1]) {
                *g = p * (*g - weighted);
            }
            ds[t1 + 1..].fill(0.0);
        }
    })
}

/// Overwrites `dqkv: (B, T, C + 2 KVC)`, laid out as `qkv`, the training
/// projection that is both the queries and the keys and values (`d.q_stride
/// == d.kv_stride`); `scratch` holds [`scratch_len`] floats. Training only: `d.pos == 0`.
pub fn backward(
    dqkv: &mut [f32],
    scratch: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    lse: &[f32],
    d: AttentionDims,
    dropout: Option<&Dropout>,
) {
    let (t, c, nh, hs, w) = (d.t, d.c, d.n_head, d.head_size(), d.q_stride);
    assert_eq!(d.pos, 0, "attention backward runs on whole sequences");
    assert_eq!(d.q_stride, d.kv_stride, "backward reads one qkv projection");
    let scale = 1.0 / (hs as f32).sqrt();
    let row_att = nh * t * t;
    dqkv[..d.b * t * w]
        .par_chunks_mut(t * w)
        .zip(scratch[..scratch_len(d)].par_chunks_mut(3 * t * t))
        .zip(dout[..d.b * t * c].par_chunks(t * c))
        .zip(qkv[..d.b * t * w].par_chunks(t * w))
        .zip(lse[..d.b * nh * t].par_chunks(nh * t))
        .enumerate()
        .for_each(|(b, ((((dqkv, scratch), dout), qkv), lse))| {
            let (probs, rest) = scratch.split_at_mut(t * t);
            let (dp, drop_scratch) = rest.split_at_mut(t * t);
            for h in 0..nh {
                // The first query head of a group writes its key/value head's gradient.
                let kv_acc = match h % d.group() {
                    0 => Accumulate::Overwrite,
                    _ => Accumulate::Add,
                };
                let [q, k, v] = head_views(qkv, qkv, d, h);
                let dy = MatRef::strided(&dout[h * hs..], t, hs, c);
                matmul_into(probs, t, q, k.t(), Accumulate::Overwrite, scale, false);
                causal_probs_from_lse(probs, &lse[h * t..(h + 1) * t], t);
                let probs = &*probs;
                let first = b * row_att + h * t * t;
                let weights = dropped(probs, drop_scratch, dropout, first);
                // Through `Y = D V`.
                let dv = &mut dqkv[d.value_column(h)..];
                let weights_t = MatRef::new(weights, t, t).t();
                matmul_into(dv, w, weights_t, dy, kv_acc, 1.0, false);
                matmul_into(dp, t, dy, v.t(), Accumulate::Overwrite, 1.0, false);
                softmax_backward(dp, probs, t, dropout, first);
                // Through `S = Q K^T / sqrt(hs)`.
                let ds = MatRef::new(dp, t, t);
                let dq = &mut dqkv[h * hs..];
                matmul_into(dq, w, ds, k, Accumulate::Overwrite, scale, false);
                let dk = &mut dqkv[d.key_column(h)..];
                matmul_into(dk, w, ds.t(), q, kv_acc, scale, false);
            }
        });
}
