//! Compute backends: the one seam between the model's wiring and its kernels.
//!
//! [`crate::model`] writes the GPT's forward and backward pass once, as a
//! sequence of calls to the [`Backend`] trait; a backend supplies the buffers
//! those calls run on and the kernels themselves. The CPU backend
//! ([`cpu::Cpu`]) runs matrix products on the `gemm` crate and every other
//! kernel on `rayon`, over ordinary `Vec<f32>`s; a GPU backend would keep
//! the same buffers in device memory.
//!
//! What crosses the seam:
//! - owned buffers ([`Backend::Buf`] of `f32`, [`Backend::Ids`] of token ids)
//!   and views of parts of them ([`Backend::View`], [`Backend::ViewMut`]),
//!   cut by the ranges of [`crate::model::ParamLayout`] and of the
//!   activations' size table;
//! - the kernels, each with explicit dimensions (`n` rows of `c` channels,
//!   `v` vocabulary entries...), in the style of llm.c;
//! - little else goes back to the host: one loss and one gradient norm per
//!   step, one row of logits per sampled token, and the weights when a
//!   checkpoint is written ([`Backend::on_host`]).
//!
//! Every kernel of a backend must compute what the CPU kernels' doc comments
//! write down (`backend/cpu/*.rs`, each opening with its math), and draw the
//! same dropout masks ([`Dropout`] is a pure function of its indices).

pub mod cpu;
pub mod cuda;
mod dropout;

pub use dropout::Dropout;

use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// A target the loss skips: no loss, no gradient, not in the mean
/// (the prompt tokens of a supervised fine-tuning example).
pub const IGNORE_TARGET: u32 = u32::MAX;

/// Where the model runs, as chosen with `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Device {
    /// The CPU backend: all cores (or `--threads`), float32.
    Cpu,
    /// An NVIDIA GPU (CUDA 13, driver 580 or newer), float32. Its libraries
    /// are found at run time; one missing is an error that names it.
    Cuda,
    /// CUDA when a GPU and its libraries are found, else the CPU (saying why).
    Auto,
}

/// The element type a weight matrix is kept in for decoding (`--weights`).
///
/// Quantized types store each row of a matrix along its reduction
/// dimension `IN` in blocks of 32 values, in ggml's exact layout (so a GGUF
/// file's tensor bytes are used as they are; see `backend/cpu/quant.rs`):
/// a block stands for `x[j] = d * q[j]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightType {
    /// float32: 4 bytes a value, the flat parameter buffer itself (nothing packed).
    F32,
    /// bfloat16: 2 bytes a value (f32's top half: 8 significant bits).
    Bf16,
    /// ggml's Q8_0: blocks of 32 values, an f16 scale `d` and 32 `i8`:
    /// 34 bytes per 32 values (8.5 bits a value).
    #[value(name = "q8_0")]
    Q8_0,
    /// ggml's Q4_0: blocks of 32 values, an f16 scale `d` and 16 bytes of
    /// 4-bit `q` (value `d * (q - 8)`): 18 bytes per 32 values (4.5 bits a value).
    #[value(name = "q4_0")]
    Q4_0,
}

impl WeightType {
    /// The flag's spelling (`q8_0`).
    pub fn name(self) -> &'static str {
        match self {
            WeightType::F32 => "f32",
            WeightType::Bf16 => "bf16",
            WeightType::Q8_0 => "q8_0",
            WeightType::Q4_0 => "q4_0",
        }
    }

    /// Values per block along `IN` (1 for the float types).
    pub fn block_len(self) -> usize {
        match self {
            WeightType::F32 | WeightType::Bf16 => 1,
            WeightType::Q8_0 | WeightType::Q4_0 => 32,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            WeightType::F32 => 4,
            WeightType::Bf16 => 2,
            WeightType::Q8_0 => 34,
            WeightType::Q4_0 => 18,
        }
    }
}

/// The feed-forward non-linearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// GELU, tanh approximation (GPT-2's `gelu_new`).
    Gelu,
    Relu,
    /// `x * sigmoid(x)`; in a Llama-family model it gates the up-projection (SwiGLU).
    Silu,
}

/// Whether a matrix product overwrites its destination or is added to it
/// (weight gradients accumulate across micro-batches).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Accumulate {
    Overwrite,
    Add,
}

/// A `rows x cols` matrix inside a buffer view: element `(r, c)` sits at
/// `r * row_stride + c * col_stride`. A transpose is the same memory with the
/// strides swapped, never a copy.
#[derive(Clone, Copy, Debug)]
pub struct Mat<V> {
    pub data: V,
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<V: Copy> Mat<V> {
    /// A row-major matrix.
    pub fn new(data: V, rows: usize, cols: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose, as a view of the same memory.
    pub fn t(self) -> Self {
        Mat {
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }
}

/// What a matrix product does to its result before writing it, so the extra
/// elementwise work runs while the rows are still in cache (on a GPU: inside
/// the product's kernel, as cuBLASLt's epilogues do).
/// `'i` is the lifetime of what it reads, `'o` of what it writes.
pub enum Epilogue<'i, 'o, B: Backend + 'i + 'o> {
    /// `dst = lhs @ rhs`.
    None,
    /// `dst = lhs @ rhs + bias`, the bias `(cols)` added to every row.
    Bias(B::View<'i>),
    /// `dst = lhs @ rhs [+ bias]` is the pre-activation, kept for backward,
    /// and `out = act(dst)` the layer's output.
    Activation {
        bias: Option<B::View<'i>>,
        act: Activation,
        out: B::ViewMut<'o>,
    },
    /// `dst = (lhs @ rhs) * act'(pre)`: the gradient of a pre-activation,
    /// from the gradient of its activation.
    ActivationGrad { act: Activation, pre: B::View<'i> },
}

/// The shape of one attention call (see `backend/cpu/attention.rs`): `b`
/// rows of `t` queries at positions `pos..pos + t`, each attending to the
/// keys at positions `0..=its own`, with `n_head` query heads sharing
/// `n_kv_head` key/value heads. Training has `pos = 0`; decoding with the
/// keys and values of earlier positions already in the cache has `b = 1`, `pos > 0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionDims {
    pub b: usize,
    pub t: usize,
    pub pos: usize,
    /// Channels of all query heads: `n_head * head_size`.
    pub c: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    /// Floats from one query row to the next, and from one key/value row to the next.
    pub q_stride: usize,
    pub kv_stride: usize,
    /// Where the keys start in a key/value row (the values follow them).
    pub k_offset: usize,
}

impl AttentionDims {
    /// Queries, keys and values side by side in one projection
    /// `qkv: (B, T, C + 2 KVC)`, as the `c_attn` layer writes them.
    pub fn fused(
        b: usize,
        t: usize,
        pos: usize,
        c: usize,
        n_head: usize,
        n_kv_head: usize,
    ) -> Self {
        let width = c + 2 * n_kv_head * (c / n_head);
        AttentionDims {
            b,
            t,
            pos,
            c,
            n_head,
            n_kv_head,
            q_stride: width,
            kv_stride: width,
            k_offset: c,
        }
    }

    pub fn head_size(&self) -> usize {
        self.c / self.n_head
    }

    /// Channels of all key (or all value) heads.
    pub fn kv_width(&self) -> usize {
        self.n_kv_head * self.head_size()
    }

    /// Query heads per key/value head.
    pub fn group(&self) -> usize {
        self.n_head / self.n_kv_head
    }

    /// The column of a key/value row where query head `h`'s keys start.
    pub fn key_column(&self, h: usize) -> usize {
        self.k_offset + (h / self.group()) * self.head_size()
    }

    /// The column where query head `h`'s values start.
    pub fn value_column(&self, h: usize) -> usize {
        self.key_column(h) + self.kv_width()
    }

    /// Positions whose keys a query row can see: all of them up to the last query.
    pub fn keys(&self) -> usize {
        self.pos + self.t
    }
}

/// Gradients per partial sum of the gradient norm (see [`Backend::sum_of_squares`]).
pub const NORM_CHUNK: usize = 1 << 14;

/// The gradient norm from its partial sums of squares ([`Backend::sum_of_squares`]),
/// added in chunk order.
pub fn norm_of(partials: &[f64]) -> f32 {
    partials.iter().sum::<f64>().sqrt() as f32
}

/// Which rows [`Backend::rope_forward`] turns: `rows` rows of `row_stride`
/// floats, row `r` at position `pos + r % t`, each with `heads` heads of
/// `head_size` channels side by side from its first column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RopeDims {
    pub rows: usize,
    pub t: usize,
    pub pos: usize,
    pub heads: usize,
    pub head_size: usize,
    pub row_stride: usize,
}

/// The hyperparameters of one AdamW update (see `backend/cpu/adamw.rs`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    /// Clip the gradient norm to this (0: no clipping).
    pub grad_clip: f32,
    /// The number of this update, from 1 (for the bias corrections).
    pub t: u64,
}

/// A run of parameters AdamW treats alike: decayed (matrices) or not.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamGroup {
    pub range: Range<usize>,
    pub decays: bool,
}

/// Buffers and kernels: everything the model wiring needs from a device.
///
/// Views are cut from owned buffers with [`Backend::view`] and
/// [`Backend::view_mut`]; a kernel's outputs are `ViewMut`s, its inputs
/// `View`s. Gradients of parameters accumulate (`+=`); other outputs are
/// overwritten unless a kernel's doc says otherwise.
pub trait Backend: Sync + Sized {
    /// An owned array of `f32` on the device.
    type Buf: Send + Sync;
    /// An owned array of token ids.
    type Ids: Send + Sync;
    /// Part of a [`Backend::Buf`], read-only.
    type View<'a>: Copy + Send
    where
        Self: 'a;
    /// Part of a [`Backend::Buf`], writable.
    type ViewMut<'a>: Send
    where
        Self: 'a;
    /// Part of a [`Backend::Ids`].
    type IdsView<'a>: Copy + Send
    where
        Self: 'a;
    /// An owned weight matrix `(IN, OUT)` in a [`WeightType`] other than
    /// f32, for [`Backend::matmul_packed`] (see [`crate::model::PackedWeights`]).
    type Packed: Send + Sync;

    // Memory.

    /// `len` zeros.
    fn zeros(&self, len: usize) -> Result<Self::Buf>;
    /// `len` zeros for a buffer that every training step sweeps in full
    /// (gradients, AdamW's moments, training activations). The CPU puts
    /// it in 2 MiB pages ([`crate::huge_pages`]); a decoding cache, filled
    /// a few rows at a time, takes [`Backend::zeros`] and stays small.
    fn zeros_swept(&self, len: usize) -> Result<Self::Buf> {
        self.zeros(len)
    }
    /// A buffer holding `host` (on the CPU: `host` itself, no copy).
    fn upload(&self, host: Vec<f32>) -> Result<Self::Buf>;
    /// Room for `len` token ids.
    fn ids(&self, len: usize) -> Result<Self::Ids>;
    fn len(buf: &Self::Buf) -> usize;
    fn view(buf: &Self::Buf, range: Range<usize>) -> Self::View<'_>;
    fn view_mut(buf: &mut Self::Buf, range: Range<usize>) -> Self::ViewMut<'_>;
    /// `view` from its element `start` on (a column block of a row-major
    /// matrix starts there, e.g. one part of a fused layer's output).
    fn view_from<'a>(view: Self::View<'a>, start: usize) -> Self::View<'a>
    where
        Self: 'a;
    /// Two disjoint writable views; `second` starts at or after the end of `first`
    /// (a weight's gradient and its bias's, stored right after it).
    fn view_pair_mut(
        buf: &mut Self::Buf,
        first: Range<usize>,
        second: Range<usize>,
    ) -> (Self::ViewMut<'_>, Self::ViewMut<'_>);
    fn ids_view(ids: &Self::Ids, range: Range<usize>) -> Self::IdsView<'_>;
    /// Write `host` into `ids` from index `at` on.
    fn upload_ids(&self, ids: &mut Self::Ids, at: usize, host: &[u32]);
    /// Copy `src` into `host` (of the same length).
    fn download(&self, src: Self::View<'_>, host: &mut [f32]);
    /// Run `f` on the values of `src` as host memory (on the CPU: the buffer
    /// itself; on a GPU: a downloaded copy).
    fn on_host<R>(&self, src: Self::View<'_>, f: impl FnOnce(&[f32]) -> R) -> R;
    fn fill(&self, dst: Self::ViewMut<'_>, value: f32);
    fn copy(&self, dst: Self::ViewMut<'_>, src: Self::View<'_>);
    /// `dst *= alpha`.
    fn scale(&self, dst: Self::ViewMut<'_>, alpha: f32);
    /// `dst = a + b`.
    fn add(&self, dst: Self::ViewMut<'_>, a: Self::View<'_>, b: Self::View<'_>);

    // Layers (shapes: `n` positions, `c` channels).

    /// `out[i] = wte[idx[i]] + wpe[pos + i % t]` for the `n = idx.len()` positions
    /// of `(B, T)` ids starting at position `pos`; `wpe` is `None` for the bigram table.
    #[allow(clippy::too_many_arguments)]
    fn embedding_forward(
        &self,
        out: Self::ViewMut<'_>,
        idx: Self::IdsView<'_>,
        wte: Self::View<'_>,
        wpe: Option<Self::View<'_>>,
        pos: usize,
        t: usize,
        c: usize,
    );
    /// `dwte[idx[i]] += dout[i]`, `dwpe[i % t] += dout[i]`.
    fn embedding_backward(
        &self,
        dwte: Self::ViewMut<'_>,
        dwpe: Option<Self::ViewMut<'_>>,
        dout: Self::View<'_>,
        idx: Self::IdsView<'_>,
        t: usize,
        c: usize,
    );
    /// Layer norm of `n` rows; saves `mean` and `rstd` `(n)` for backward.
    #[allow(clippy::too_many_arguments)]
    fn layernorm_forward(
        &self,
        out: Self::ViewMut<'_>,
        mean: Self::ViewMut<'_>,
        rstd: Self::ViewMut<'_>,
        inp: Self::View<'_>,
        weight: Self::View<'_>,
        bias: Option<Self::View<'_>>,
        n: usize,
        c: usize,
        eps: f32,
    );
    /// Accumulates into `dinp` (a residual stream's gradient), `dweight` and
    /// `dbias` (both `None` for a frozen norm).
    #[allow(clippy::too_many_arguments)]
    fn layernorm_backward(
        &self,
        dinp: Self::ViewMut<'_>,
        dweight: Option<Self::ViewMut<'_>>,
        dbias: Option<Self::ViewMut<'_>>,
        dout: Self::View<'_>,
        inp: Self::View<'_>,
        weight: Self::View<'_>,
        mean: Self::View<'_>,
        rstd: Self::View<'_>,
        n: usize,
        c: usize,
    );
    /// `dst (m, n) = [dst +] lhs (m, k) @ rhs (k, n)`, then the epilogue
    /// (`dst` row-major; `Accumulate::Add` only with `Epilogue::None`).
    fn matmul(
        &self,
        dst: Self::ViewMut<'_>,
        lhs: Mat<Self::View<'_>>,
        rhs: Mat<Self::View<'_>>,
        acc: Accumulate,
        epilogue: Epilogue<'_, '_, Self>,
    );
    /// `w (IN, OUT)` (either stride order, as [`crate::model::LinearParams::weight_mat`]
    /// gives it) converted to `ty`. Refused for `WeightType::F32` (f32 weights
    /// stay in the flat buffer), and for a quantized type when `IN` is not a
    /// multiple of its block length.
    fn pack(&self, w: Mat<Self::View<'_>>, ty: WeightType) -> Result<Self::Packed>;
    /// Overwrite `dst`, packed from a matrix of `w`'s shape, with `w`
    /// converted to its type (allocating nothing): training's copy of the
    /// weights after each update. Refused for quantized weights and a
    /// different shape.
    fn repack(&self, dst: &mut Self::Packed, w: Mat<Self::View<'_>>) -> Result<()>;
    /// The type training's forward products read the weights in, when this
    /// backend wants them kept packed as that (the CPU with `--dtype bf16`:
    /// a bf16 copy, rewritten after each update); `None`: from the f32 buffer.
    fn training_weights(&self) -> Option<WeightType>;
    /// A `(IN, OUT)` weight from the bytes of a GGUF tensor of `ty`: `OUT`
    /// rows of `IN` values each, as ggml stores them (bf16: little-endian halves).
    fn pack_blocks(
        &self,
        ty: WeightType,
        in_out: (usize, usize),
        bytes: &[u8],
    ) -> Result<Self::Packed>;
    /// `dst (m, OUT) = lhs (m, IN) @ w`, then the epilogue as [`Backend::matmul`]'s
    /// (`Epilogue::None`, `Bias` or `Activation`: packed weights are for
    /// inference; `dst` row-major).
    fn matmul_packed(
        &self,
        dst: Self::ViewMut<'_>,
        lhs: Mat<Self::View<'_>>,
        w: &Self::Packed,
        epilogue: Epilogue<'_, '_, Self>,
    );
    /// The embedding through a packed table: `out[i] = table[idx[i]] (+ wpe[pos + i % t])`,
    /// where `table` is the packed `(IN = C, OUT = V)` weight of a `(V, C)`
    /// token embedding (the tied LM head's), read as f32.
    #[allow(clippy::too_many_arguments)]
    fn packed_rows(
        &self,
        out: Self::ViewMut<'_>,
        idx: Self::IdsView<'_>,
        table: &Self::Packed,
        wpe: Option<Self::View<'_>>,
        pos: usize,
        t: usize,
    );
    /// `dbias[j] += sum_i dout[i, j]` over `n` rows of `cols`.
    fn bias_backward(&self, dbias: Self::ViewMut<'_>, dout: Self::View<'_>, n: usize, cols: usize);
    /// Causal self-attention of the queries `q (B, T, ·)` over the keys and
    /// values `kv (B, P + T, ·)` (the same `qkv` in training): `out (B, T, C)`,
    /// and `lse (B, NH, T)` (each query's log-sum-exp) saved for backward.
    fn attention_forward(
        &self,
        out: Self::ViewMut<'_>,
        lse: Self::ViewMut<'_>,
        q: Self::View<'_>,
        kv: Self::View<'_>,
        dims: AttentionDims,
        dropout: Option<Dropout>,
    );
    /// Decoding attention for a batch of sequences, one new query each:
    /// row `i` of `out (n, C)` and `lse (n, NH)` from row `i` of `q` (rows
    /// `q_stride` apart) over the keys and values `caches[i].0`, laid out
    /// as `caches[i].1` says (`b = 1`, `t = 1`). The same numbers as
    /// [`Backend::attention_forward`] on each row alone.
    #[allow(clippy::type_complexity)]
    fn attention_decode(
        &self,
        out: Self::ViewMut<'_>,
        lse: Self::ViewMut<'_>,
        q: Self::View<'_>,
        caches: &[(Self::View<'_>, AttentionDims)],
    );
    /// Overwrites `dqkv (B, T, C + 2 KVC)` (training only: `dims.pos == 0`).
    #[allow(clippy::too_many_arguments)]
    fn attention_backward(
        &self,
        dqkv: Self::ViewMut<'_>,
        dout: Self::View<'_>,
        qkv: Self::View<'_>,
        lse: Self::View<'_>,
        dims: AttentionDims,
        dropout: Option<Dropout>,
    );
    /// RMS norm of `n` rows with gain `weight`; saves `rstd (n)` for backward.
    #[allow(clippy::too_many_arguments)]
    fn rmsnorm_forward(
        &self,
        out: Self::ViewMut<'_>,
        rstd: Self::ViewMut<'_>,
        inp: Self::View<'_>,
        weight: Self::View<'_>,
        n: usize,
        c: usize,
        eps: f32,
    );
    /// Accumulates into `dinp` and `dweight` (`None` for a frozen norm).
    #[allow(clippy::too_many_arguments)]
    fn rmsnorm_backward(
        &self,
        dinp: Self::ViewMut<'_>,
        dweight: Option<Self::ViewMut<'_>>,
        dout: Self::View<'_>,
        inp: Self::View<'_>,
        weight: Self::View<'_>,
        rstd: Self::View<'_>,
        n: usize,
        c: usize,
    );
    /// Rotary position embeddings in place, from a `(cos, sin)` table.
    fn rope_forward(&self, x: Self::ViewMut<'_>, table: Self::View<'_>, dims: RopeDims);
    /// The gradient through [`Backend::rope_forward`], in place.
    fn rope_backward(&self, dx: Self::ViewMut<'_>, table: Self::View<'_>, dims: RopeDims);
    /// `out (n, i) = silu(fc[:, :i]) * fc[:, i:]` (SwiGLU).
    fn swiglu_forward(&self, out: Self::ViewMut<'_>, fc: Self::View<'_>, n: usize, i: usize);
    /// Overwrites `dfc (n, 2i)` from `dout (n, i)` and the saved `fc`.
    fn swiglu_backward(
        &self,
        dfc: Self::ViewMut<'_>,
        dout: Self::View<'_>,
        fc: Self::View<'_>,
        n: usize,
        i: usize,
    );
    /// `dst (rows, cols) = src[r * src_stride + first + j]`: columns
    /// `first..first + cols` of each row of `src`, packed (a Llama's new keys
    /// and values into its KV cache).
    fn copy_columns(
        &self,
        dst: Self::ViewMut<'_>,
        src: Self::View<'_>,
        rows_cols: (usize, usize),
        src_stride_first: (usize, usize),
    );
    /// `branch = drop(branch) + skip`: closes a residual connection in place.
    fn residual(&self, branch: Self::ViewMut<'_>, skip: Self::View<'_>, dropout: Option<Dropout>);
    /// `x = x * mask / (1 - p)` in place (an activation going forward, its gradient going back).
    fn dropout(&self, x: Self::ViewMut<'_>, dropout: Dropout);
    /// Softmax + cross-entropy of `n` rows of `v` logits against `targets`:
    /// per-position losses into `losses`, and their mean returned (over the
    /// targets that are not [`IGNORE_TARGET`], which get loss and gradient 0). With
    /// `dloss = Some(w)`, the logits are overwritten by the gradient of
    /// `w * sum of losses` (fused, as llm.c does).
    fn cross_entropy(
        &self,
        losses: Self::ViewMut<'_>,
        logits: Self::ViewMut<'_>,
        targets: Self::IdsView<'_>,
        v: usize,
        dloss: Option<f32>,
    ) -> f32;
    /// `partials[i] = sum g^2` (in f64) over chunk `i` of [`NORM_CHUNK`]
    /// gradients (the last chunk may be shorter); `partials` holds one entry
    /// per chunk. Added in chunk order they give the squared gradient norm,
    /// the same whatever the thread count, and the same when the chunks are
    /// computed on different ranks (each owning whole chunks).
    fn sum_of_squares(&self, grads: Self::View<'_>, partials: &mut [f64]);
    /// One AdamW update of `params` from `grads` (moments `m`, `v`), with the
    /// gradients first scaled by the clip factor that `norm` (the norm of all
    /// gradients, of every rank) gives. When `norm` is not finite (a NaN or
    /// infinite gradient) nothing is updated.
    #[allow(clippy::too_many_arguments)]
    fn adamw(
        &self,
        params: Self::ViewMut<'_>,
        grads: Self::View<'_>,
        m: Self::ViewMut<'_>,
        v: Self::ViewMut<'_>,
        groups: &[ParamGroup],
        step: AdamWStep,
        norm: f32,
    );
    /// Run `f` on the values of `dst` as writable host memory (on the CPU:
    /// the buffer itself; on a GPU: a copy, uploaded back afterwards). The
    /// collectives of the MPI path work through it.
    fn on_host_mut<R>(&self, dst: Self::ViewMut<'_>, f: impl FnOnce(&mut [f32]) -> R) -> R;

    /// Run `work` (one training step, one decoding step...) the way this
    /// backend runs work best (the CPU backend: on its thread pool, with the
    /// other workers kept polling).
    fn run<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R;
}
