//! The activations: every tensor the forward pass writes and the backward
//! pass reads, sized once from one table ([`sizes`], llm.c's `act_sizes`)
//! and allocated on the backend before the first step.
//!
//! Rows are positions: a training batch of `B` sequences of `T` tokens has
//! `N = B * T` rows, sequence `b`'s position `t` at row `b * T + t`. A
//! [`Window`] says which rows one forward pass computes. Tensors a block
//! writes have one slot per layer (backward reads them all).
//!
//! Two purposes:
//! - [`Purpose::Training`]: `N = B * T` rows, every layer's tensors, the
//!   backward scratch, logits for every row.
//! - [`Purpose::Inference`]: one sequence of up to `block_size` positions.
//!   Only `qkv` keeps a slot per layer: its rows of earlier positions hold
//!   their keys and values, so a new token is one more row (the KV cache).
//!   The other tensors are one slot reused by every layer (a block reads its
//!   input before it overwrites it), and logits are kept for the last
//!   position only. For GPT-2 at 1024 positions that is 160 MB instead of 1.3 GB.
//! - [`Purpose::Decoding`]: one row per sequence of a decoding batch, every
//!   tensor one reused slot (`qkv` holds the new rows before they are copied
//!   into each sequence's cache), logits for every row.
//! - [`Purpose::Scoring`]: `N` rows split into any `B x T` window, forward only:
//!   every tensor one reused slot (`qkv` too: the window is computed whole,
//!   nothing is cached for later), no backward scratch, logits and losses for
//!   every row. What evaluation (`lmforge eval`) runs.

use super::config::ModelConfig;
use super::family::{Mlp, Positions};
use super::lora::LoraScratch;
use crate::backend::Backend;
use crate::error::Result;
use std::ops::Range;

/// What a set of activations serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Forward and backward over batches of up to `B x T` tokens.
    Training,
    /// Forward only, one sequence of up to `block_size` positions, with the KV cache.
    Inference,
    /// Forward only, one new position for each of up to `B` sequences whose
    /// KV caches are in their own [`Purpose::Inference`] activations (a
    /// server decoding many requests together); logits for every row.
    Decoding,
    /// Forward only over batches of up to `B x T` tokens, with the logits
    /// and per-position losses of every row (evaluation).
    Scoring,
}

/// The positions one forward pass computes: `b` sequences of `t` new tokens
/// at positions `pos..pos + t`. Training and evaluation have `pos = 0`;
/// decoding continues one sequence (`b = 1`) whose earlier positions are
/// already in the activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub b: usize,
    pub t: usize,
    pub pos: usize,
}

impl Window {
    /// `b` whole sequences of `t` tokens.
    pub fn batch(b: usize, t: usize) -> Self {
        Window { b, t, pos: 0 }
    }

    /// `t` more tokens of one sequence after its first `pos`.
    pub fn continuing(pos: usize, t: usize) -> Self {
        Window { b: 1, t, pos }
    }

    /// Number of positions computed.
    pub fn n(&self) -> usize {
        self.b * self.t
    }

    /// The rows they occupy (`pos` is 0 or `b` is 1, so they are contiguous).
    pub fn rows(&self) -> Rows {
        Rows {
            start: self.pos,
            end: self.pos + self.n(),
        }
    }
}

/// A run of rows (positions) of a tensor: a `Copy` range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rows {
    pub start: usize,
    pub end: usize,
}

impl Rows {
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

impl From<Range<usize>> for Rows {
    fn from(r: Range<usize>) -> Self {
        Rows {
            start: r.start,
            end: r.end,
        }
    }
}

impl From<Rows> for Range<usize> {
    fn from(r: Rows) -> Self {
        r.start..r.end
    }
}

/// One tensor's extent: `layers` slots of `rows x width` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub layers: usize,
    pub rows: usize,
    pub width: usize,
}

impl Shape {
    fn len(&self) -> usize {
        self.layers * self.rows * self.width
    }
}

/// A tensor of activations in a backend buffer.
pub struct Tensor<B: Backend> {
    buf: B::Buf,
    shape: Shape,
}

impl<B: Backend> Tensor<B> {
    /// Floats allocated (to check the memory estimate against).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        B::len(&self.buf)
    }

    /// Where rows `rows` of layer `layer`'s slot sit in the buffer.
    fn range(&self, layer: usize, rows: Rows) -> Range<usize> {
        let Shape {
            layers,
            rows: max_rows,
            width,
        } = self.shape;
        assert!(rows.end <= max_rows, "rows {rows:?} beyond {max_rows}");
        let base = (layer % layers.max(1)) * max_rows * width;
        base + rows.start * width..base + rows.end * width
    }

    /// Rows `rows` of layer `layer`.
    pub fn at(&self, layer: usize, rows: impl Into<Rows>) -> B::View<'_> {
        B::view(&self.buf, self.range(layer, rows.into()))
    }

    pub fn at_mut(&mut self, layer: usize, rows: impl Into<Rows>) -> B::ViewMut<'_> {
        let range = self.range(layer, rows.into());
        B::view_mut(&mut self.buf, range)
    }
}

/// A layer norm's output and the per-position statistics its backward needs.
pub struct NormActs<T> {
    /// `(N, C)`.
    pub out: T,
    /// `(N)` each.
    pub mean: T,
    pub rstd: T,
}

/// Every activation by name. `T` is a [`Shape`] in the size table and a
/// [`Tensor`] in [`Activations`]. Shapes with `L` have a slot per layer.
pub struct ActTensors<T> {
    /// `(N, C)`: token + position embeddings.
    pub encoded: T,
    /// `(L, N, C)` and `(L, N)`: the first layer norm of each block.
    pub ln_1: NormActs<T>,
    /// `(L, N, C + 2 KVC)`: queries, keys and values (the GPT's KV cache
    /// when decoding); rotated by RoPE in a Llama-family model.
    pub qkv: T,
    /// `(L, N, 2 KVC)`: a Llama-family model's KV cache (inference only):
    /// the keys and values of every position seen.
    pub kv_cache: T,
    /// `(L, B, NH, T)`: attention's log-sum-exp per query.
    pub att_lse: T,
    /// `(L, N, C)`: attention output, heads side by side.
    pub atty: T,
    /// `(L, N, C)`: the residual stream after the attention sub-layer.
    pub res_attn: T,
    pub ln_2: NormActs<T>,
    /// `(L, N, 4C)`: the feed-forward pre-activation and activation
    /// (Llama: `(L, N, 2I)` gate and up projections, and `(L, N, I)`).
    pub fc: T,
    pub fc_act: T,
    /// `(L, N, C)`: the residual stream after the feed-forward sub-layer.
    pub res_mlp: T,
    pub ln_f: NormActs<T>,
    /// `(N, V)`: logits after forward, their gradient after backward
    /// (inference: `(1, V)`, the last position's).
    pub logits: T,
    /// `(N)`: per-position losses.
    pub losses: T,
}

/// Backward scratch (training only), `(N, C)` unless noted: one slot, reused
/// by every block. `d_res` carries the residual stream's gradient down the blocks.
pub struct Scratch<T> {
    pub d_res: T,
    pub d_sum: T,
    pub d_branch: T,
    pub d_ln: T,
    pub d_atty: T,
    /// `(N, C + 2 KVC)`.
    pub d_qkv: T,
    /// `(N, 4C)` (Llama: `(N, 2I)`).
    pub d_fc: T,
    /// `(N, I)`: the gradient of SwiGLU's output (Llama only).
    pub d_fc_act: T,
}

impl<T> NormActs<T> {
    fn try_map<U>(self, f: &mut impl FnMut(T) -> Result<U>) -> Result<NormActs<U>> {
        Ok(NormActs {
            out: f(self.out)?,
            mean: f(self.mean)?,
            rstd: f(self.rstd)?,
        })
    }
}

impl<T> ActTensors<T> {
    /// The same table with every entry passed through `f` (also how
    /// [`crate::memory`] sums the table).
    pub(crate) fn try_map<U>(self, mut f: impl FnMut(T) -> Result<U>) -> Result<ActTensors<U>> {
        Ok(ActTensors {
            encoded: f(self.encoded)?,
            ln_1: self.ln_1.try_map(&mut f)?,
            qkv: f(self.qkv)?,
            kv_cache: f(self.kv_cache)?,
            att_lse: f(self.att_lse)?,
            atty: f(self.atty)?,
            res_attn: f(self.res_attn)?,
            ln_2: self.ln_2.try_map(&mut f)?,
            fc: f(self.fc)?,
            fc_act: f(self.fc_act)?,
            res_mlp: f(self.res_mlp)?,
            ln_f: self.ln_f.try_map(&mut f)?,
            logits: f(self.logits)?,
            losses: f(self.losses)?,
        })
    }
}

impl<T> Scratch<T> {
    pub(crate) fn try_map<U>(self, mut f: impl FnMut(T) -> Result<U>) -> Result<Scratch<U>> {
        Ok(Scratch {
            d_res: f(self.d_res)?,
            d_sum: f(self.d_sum)?,
            d_branch: f(self.d_branch)?,
            d_ln: f(self.d_ln)?,
            d_atty: f(self.d_atty)?,
            d_qkv: f(self.d_qkv)?,
            d_fc: f(self.d_fc)?,
            d_fc_act: f(self.d_fc_act)?,
        })
    }
}

/// The size table: the shape of every activation and of the backward
/// scratch, for `rows` positions.
pub fn sizes(
    cfg: &ModelConfig,
    rows: usize,
    purpose: Purpose,
) -> (ActTensors<Shape>, Scratch<Shape>) {
    let training = purpose == Purpose::Training;
    let decoding = purpose == Purpose::Decoding;
    let scoring = purpose == Purpose::Scoring;
    let recipe = cfg.family().recipe;
    let blocks = recipe.is_some();
    let rotary = recipe.is_some_and(|r| r.positions == Positions::Rotary);
    let swiglu = recipe.is_some_and(|r| r.mlp == Mlp::SwiGlu);
    let (c, v, nh) = (cfg.n_embd, cfg.vocab_size, cfg.n_head);
    let layers = if blocks { cfg.n_layer } else { 0 };
    // Per-layer tensors: every layer for backward, one reused slot for inference.
    let kept = if training { layers } else { layers.min(1) };
    let shape = |layers: usize, rows: usize, width: usize| Shape {
        layers,
        rows,
        width,
    };
    let none = shape(0, 0, 0);
    let block = |width: usize| shape(kept, rows, width);
    let norm = |layers: usize, rows: usize| NormActs {
        out: shape(layers, rows, c),
        mean: shape(layers, rows, 1),
        rstd: shape(layers, rows, 1),
    };
    let with_blocks = |s: Shape| if blocks { s } else { none };
    let scratch = |width: usize| with_blocks(shape(training as usize, rows, width));
    let head_rows = if training || decoding || scoring {
        rows
    } else {
        1
    };
    let kv_width = 2 * cfg.n_kv_head() * cfg.head_size();
    // The KV cache: a GPT keeps every layer's `qkv` rows; a Llama (rotary
    // positions: its keys are cached turned) keeps only its KV heads, in
    // `kv_cache`. A decoding batch caches nothing itself.
    let (qkv, kv_cache) = match (rotary, purpose) {
        (_, Purpose::Decoding | Purpose::Scoring) => (block(cfg.qkv_width()), none),
        (true, Purpose::Inference) => (block(cfg.qkv_width()), shape(layers, rows, kv_width)),
        _ => (shape(layers, rows, cfg.qkv_width()), none),
    };
    let tensors = ActTensors {
        encoded: with_blocks(shape(1, rows, c)),
        ln_1: norm(kept, rows),
        qkv,
        kv_cache,
        att_lse: block(nh),
        atty: block(c),
        res_attn: block(c),
        ln_2: norm(kept, rows),
        fc: block(cfg.fc_width()),
        fc_act: block(cfg.ffn_width()),
        res_mlp: block(c),
        ln_f: if blocks {
            norm(1, head_rows)
        } else {
            norm(0, 0)
        },
        logits: shape(1, head_rows, v),
        losses: shape((training || scoring) as usize, rows, 1),
    };
    let scratch = Scratch {
        d_res: scratch(c),
        d_sum: scratch(c),
        d_branch: scratch(c),
        d_ln: scratch(c),
        d_atty: scratch(c),
        d_qkv: scratch(cfg.qkv_width()),
        d_fc: scratch(cfg.fc_width()),
        d_fc_act: if swiglu {
            scratch(cfg.ffn_width())
        } else {
            none
        },
    };
    (tensors, scratch)
}

/// The activations of one model for one purpose, on a backend.
pub struct Activations<B: Backend> {
    pub purpose: Purpose,
    /// The largest window: `batch_size` sequences of `block_size` positions.
    pub batch_size: usize,
    pub block_size: usize,
    pub tensors: ActTensors<Tensor<B>>,
    pub scratch: Scratch<Tensor<B>>,
    /// `(N)` token ids of the window's positions, and the next-token targets.
    pub tokens: B::Ids,
    pub targets: B::Ids,
    /// Where adapted layers form their effective weights (LoRA models only).
    pub lora: Option<std::sync::Arc<LoraScratch<B>>>,
    /// The rotary embeddings' `(cos, sin)` table for every position
    /// (`block_size x hs/2` pairs; Llama family only), see [`super::rope`].
    pub rope: Option<std::sync::Arc<B::Buf>>,
}

/// LoRA's scratch, sized for the widest block linear (`C x W` with `W` the
/// wider of `c_attn`'s and `c_fc`'s outputs: `4C` for GPT-2, `2I` for a
/// Llama's `[gate | up]`; `B` at most `W x r`) and `rows` positions.
fn lora_scratch<B: Backend>(
    be: &B,
    cfg: &ModelConfig,
    rows: usize,
) -> Result<Option<std::sync::Arc<LoraScratch<B>>>> {
    let Some(lora) = &cfg.lora else {
        return Ok(None);
    };
    let (c, r) = (cfg.n_embd, lora.rank);
    let widest = cfg.qkv_width().max(cfg.fc_width());
    let scratch = LoraScratch::new(be, c * widest, widest * r, rows * r)?;
    Ok(Some(std::sync::Arc::new(scratch)))
}

impl<B: Backend> Activations<B> {
    /// Buffers for training (and evaluating) batches of up to `batch_size x block_size`.
    pub fn training(
        be: &B,
        cfg: &ModelConfig,
        batch_size: usize,
        block_size: usize,
    ) -> Result<Self> {
        Self::new(be, cfg, Purpose::Training, batch_size, block_size)
    }

    /// Buffers for generating one sequence of up to `cfg.block_size` positions.
    pub fn inference(be: &B, cfg: &ModelConfig) -> Result<Self> {
        Self::new(be, cfg, Purpose::Inference, 1, cfg.block_size)
    }

    /// Buffers for scoring (forward only, every position's loss) `rows`
    /// positions at a time, in any window `b x t` with `b * t <= rows` (and
    /// `t <= cfg.block_size`): many short sequences or a few long ones.
    pub fn scoring(be: &B, cfg: &ModelConfig, rows: usize) -> Result<Self> {
        Self::new(be, cfg, Purpose::Scoring, rows, 1)
    }

    /// Buffers for one decoding step of up to `sequences` sequences at once
    /// (their caches: [`Activations::inference`] each).
    pub fn decoding(be: &B, cfg: &ModelConfig, sequences: usize) -> Result<Self> {
        Self::new(be, cfg, Purpose::Decoding, sequences, 1)
    }

    fn new(be: &B, cfg: &ModelConfig, purpose: Purpose, b: usize, t: usize) -> Result<Self> {
        let rows = b * t;
        let allocate = |shape: Shape| {
            let buf = match purpose {
                Purpose::Training => be.zeros_swept(shape.len())?,
                _ => be.zeros(shape.len())?,
            };
            Ok(Tensor { buf, shape })
        };
        let (tensors, scratch) = sizes(cfg, rows, purpose);
        let (tensors, scratch) = (tensors.try_map(allocate)?, scratch.try_map(allocate)?);
        let targets = if matches!(purpose, Purpose::Training | Purpose::Scoring) {
            rows
        } else {
            0
        };
        Ok(Activations {
            purpose,
            batch_size: b,
            block_size: t,
            tensors,
            scratch,
            tokens: be.ids(rows)?,
            targets: be.ids(targets)?,
            lora: lora_scratch(be, cfg, rows)?,
            rope: match &cfg.llama {
                Some(llama) => {
                    let table = super::rope::table(llama, cfg.head_size(), cfg.block_size);
                    Some(std::sync::Arc::new(be.upload(table)?))
                }
                None => None,
            },
        })
    }

    /// Panics unless `window` fits these buffers (a caller's mistake, not the user's).
    pub(super) fn check(&self, window: Window) {
        let fits = match self.purpose {
            Purpose::Training => {
                window.pos == 0 && window.b <= self.batch_size && window.t <= self.block_size
            }
            Purpose::Scoring => window.pos == 0 && window.n() <= self.batch_size * self.block_size,
            Purpose::Inference => window.b == 1 && window.pos + window.t <= self.block_size,
            Purpose::Decoding => window.pos == 0 && window.t == 1 && window.b <= self.batch_size,
        };
        assert!(
            fits && window.t > 0,
            "window {window:?} does not fit {:?} activations of {} x {}",
            self.purpose,
            self.batch_size,
            self.block_size
        );
    }

    /// Rows of the head's input (the last block's output) and of its output
    /// (`ln_f`, logits): every row in training, the last position when decoding.
    pub(super) fn head_rows(&self, window: Window) -> (Rows, Rows) {
        match self.purpose {
            Purpose::Training | Purpose::Decoding | Purpose::Scoring => {
                (window.rows(), window.rows())
            }
            Purpose::Inference => {
                let last = window.rows().end - 1;
                ((last..last + 1).into(), (0..1).into())
            }
        }
    }

    /// Logits of the last position of the last forward (inference), or of
    /// row `row` (training).
    pub fn logits_row(&self, row: usize) -> B::View<'_> {
        self.tensors.logits.at(0, row..row + 1)
    }

    /// Per-position losses of rows `rows`, left by [`super::Model::loss`]
    /// (training or scoring activations).
    pub fn losses(&self, rows: Range<usize>) -> B::View<'_> {
        self.tensors.losses.at(0, rows)
    }
}
