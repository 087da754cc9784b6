//! The CPU backend: the thread pool, and every kernel of the [`Backend`]
//! seam, one file per layer, each opening with its math.

pub mod activation;
pub mod adamw;
pub mod attention;
pub mod bf16;
pub mod dropout;
pub mod embedding;
pub mod few_rows;
pub mod layernorm;
pub mod linear;
pub mod loss;
pub mod math;
pub mod matmul;
pub mod quant;
pub mod rmsnorm;
pub mod rope;
pub mod simd;
pub mod swiglu;

use crate::backend::{
    Accumulate, AdamWStep, AttentionDims, Backend, Dropout, Epilogue, Mat, ParamGroup, RopeDims,
    WeightType,
};
use crate::error::{Error, Result};
use matmul::MatRef;
use rayon::prelude::*;
use simd::vectorised;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// The element type the CPU backend's matrix products take (`--dtype`).
/// Buffers, weights and every other kernel stay f32 either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Dtype {
    /// float32 operands (the `gemm` crate).
    #[default]
    F32,
    /// Both operands of every product rounded to bfloat16 (to nearest, ties
    /// to even) and multiplied with f32 sums ([`bf16`]): as PyTorch's
    /// `torch.autocast("cpu", dtype=torch.bfloat16)` runs a linear layer.
    Bf16,
}

/// The CPU backend: buffers are `Vec`s in host memory; every kernel runs on
/// the global `rayon` pool (sized by [`init_threads`]). It owns the scratch
/// its kernels need beyond their outputs (attention's score matrices, the
/// bf16 operands of products), grown on first use and then reused, so
/// steps after the first allocate nothing.
#[derive(Default)]
pub struct Cpu {
    attention_scratch: Mutex<Vec<f32>>,
    dtype: Dtype,
    /// Boxed: the backend stays small enough to pass by value.
    bf16_scratch: Box<Mutex<bf16::Bf16Scratch>>,
    /// A quantized product's activations, and its transposed result.
    quant_scratch: Mutex<(quant::QuantizedRows, Vec<f32>)>,
}

/// A weight matrix `(IN, OUT)` kept in a type other than f32 (see [`WeightType`]).
pub enum Packed {
    /// bf16, in the panels [`bf16::matmul`] reads.
    Bf16(bf16::Bf16Panels),
    /// Q8_0 or Q4_0 blocks along `IN` ([`quant`]).
    Quant(quant::QuantMatrix),
}

impl Packed {
    /// `(IN, OUT)`.
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Packed::Bf16(p) => p.shape(),
            Packed::Quant(q) => q.shape(),
        }
    }

    /// Bytes held (bf16 panels: padded to whole panels and pairs).
    pub fn byte_len(&self) -> usize {
        match self {
            Packed::Bf16(p) => p.byte_len(),
            Packed::Quant(q) => q.byte_len(),
        }
    }

    /// Row `o` of the transposed matrix, `W[:, o]`, as f32 into `out (IN)`.
    fn column(&self, o: usize, out: &mut [f32]) {
        match self {
            Packed::Bf16(p) => out
                .iter_mut()
                .enumerate()
                .for_each(|(r, v)| *v = p.value(r, o)),
            Packed::Quant(q) => q.dequantize_row(o, out),
        }
    }
}

impl Cpu {
    pub fn new() -> Self {
        Cpu::default()
    }

    /// A backend whose matrix products take `dtype` operands. For bf16 on a
    /// CPU without AVX512_BF16 (or below the avx512 level) this prints once
    /// that the products run as portable code: the same numbers, slower.
    pub fn with_dtype(dtype: Dtype) -> Self {
        if dtype == Dtype::Bf16 && !simd::pairs_in_hardware() {
            eprintln!(
                "warning: this CPU (or LMFORGE_SIMD) has no AVX512_BF16: bf16 products run as \
                 portable code, with the same results, slower than f32"
            );
        }
        Cpu {
            dtype,
            ..Cpu::default()
        }
    }

    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// Bytes of bf16 operands held for the products (0 with f32 products).
    pub fn bf16_scratch_bytes(&self) -> usize {
        let kept = self.bf16_scratch.lock();
        kept.map_or(0, |s| s.held_bytes())
    }

    /// Run `f` on `len` floats of attention scratch.
    fn with_attention_scratch<R>(&self, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
        with_scratch(&self.attention_scratch, len, f)
    }
}

/// Run `f` on the first `len` elements of `scratch`, grown if shorter. If
/// another thread is using it (the same backend running two things at once),
/// a fresh buffer serves instead of waiting: a kernel never blocks on a lock.
fn with_scratch<T: Clone + Default, R>(
    scratch: &Mutex<Vec<T>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    match scratch.try_lock() {
        Ok(mut kept) => {
            if kept.len() < len {
                kept.resize(len, T::default());
            }
            f(&mut kept[..len])
        }
        Err(_) => f(&mut vec![T::default(); len]),
    }
}

/// `dst (m, n) = [dst +] lhs @ rhs` in bf16 ([`bf16::Bf16Scratch`]), then the
/// epilogue, applied after the whole product.
fn matmul_bf16(
    scratch: &Mutex<bf16::Bf16Scratch>,
    dst: &mut [f32],
    (lhs, rhs): (MatRef, MatRef),
    acc: Accumulate,
    epilogue: Epilogue<'_, '_, Cpu>,
) {
    let len = lhs.rows() * rhs.cols();
    let product = |dst: &mut [f32], mode| match scratch.try_lock() {
        Ok(mut kept) => kept.matmul(dst, lhs, rhs, mode),
        Err(_) => bf16::Bf16Scratch::default().matmul(dst, lhs, rhs, mode),
    };
    let with_bias = |dst: &mut [f32], bias: Option<&[f32]>| match bias {
        Some(bias) => {
            linear::fill_rows(&mut dst[..len], bias, rhs.cols());
            product(dst, Accumulate::Add)
        }
        None => product(dst, Accumulate::Overwrite),
    };
    match epilogue {
        Epilogue::None => product(dst, acc),
        Epilogue::Bias(bias) => with_bias(dst, Some(bias)),
        Epilogue::Activation { bias, act, out } => {
            with_bias(dst, bias);
            activation::forward(&mut out[..len], &dst[..len], act);
        }
        Epilogue::ActivationGrad { act, pre } => {
            product(dst, Accumulate::Overwrite);
            activation::backward_inplace(&mut dst[..len], &pre[..len], act);
        }
    }
}

/// `bias (n)` added to every row of `dst (m, n)`.
fn add_bias(dst: &mut [f32], bias: &[f32]) {
    let n = bias.len();
    dst.par_chunks_mut(n.max(1)).for_each(|row| {
        vectorised!({
            for (d, b) in row.iter_mut().zip(bias) {
                *d += b;
            }
        })
    });
}

fn mat(m: Mat<&[f32]>) -> MatRef<'_> {
    MatRef::from_mat(m)
}

impl Backend for Cpu {
    type Buf = Vec<f32>;
    type Ids = Vec<u32>;
    type View<'a> = &'a [f32];
    type ViewMut<'a> = &'a mut [f32];
    type IdsView<'a> = &'a [u32];
    type Packed = Packed;

    fn zeros(&self, len: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; len])
    }

    fn zeros_swept(&self, len: usize) -> Result<Vec<f32>> {
        let buf = vec![0.0; len];
        crate::huge_pages::advise(&buf);
        Ok(buf)
    }

    fn upload(&self, host: Vec<f32>) -> Result<Vec<f32>> {
        Ok(host)
    }

    fn ids(&self, len: usize) -> Result<Vec<u32>> {
        Ok(vec![0; len])
    }

    fn len(buf: &Vec<f32>) -> usize {
        buf.len()
    }

    fn view(buf: &Vec<f32>, range: Range<usize>) -> &[f32] {
        &buf[range]
    }

    fn view_mut(buf: &mut Vec<f32>, range: Range<usize>) -> &mut [f32] {
        &mut buf[range]
    }

    fn view_from<'a>(view: &'a [f32], start: usize) -> &'a [f32]
    where
        Self: 'a,
    {
        &view[start..]
    }

    fn view_pair_mut(
        buf: &mut Vec<f32>,
        first: Range<usize>,
        second: Range<usize>,
    ) -> (&mut [f32], &mut [f32]) {
        assert!(
            second.start >= first.end,
            "view_pair_mut: ranges out of order"
        );
        let (head, tail) = buf.split_at_mut(second.start);
        (&mut head[first], &mut tail[..second.len()])
    }

    fn ids_view(ids: &Vec<u32>, range: Range<usize>) -> &[u32] {
        &ids[range]
    }

    fn upload_ids(&self, ids: &mut Vec<u32>, at: usize, host: &[u32]) {
        ids[at..at + host.len()].copy_from_slice(host);
    }

    fn download(&self, src: &[f32], host: &mut [f32]) {
        host.copy_from_slice(src);
    }

    fn on_host<R>(&self, src: &[f32], f: impl FnOnce(&[f32]) -> R) -> R {
        f(src)
    }

    fn fill(&self, dst: &mut [f32], value: f32) {
        use rayon::prelude::*;
        dst.par_chunks_mut(1 << 16)
            .for_each(|chunk| chunk.fill(value));
    }

    fn copy(&self, dst: &mut [f32], src: &[f32]) {
        dst.copy_from_slice(src);
    }

    fn scale(&self, dst: &mut [f32], alpha: f32) {
        vectorised!({ dst.iter_mut().for_each(|x| *x *= alpha) });
    }

    fn add(&self, dst: &mut [f32], a: &[f32], b: &[f32]) {
        vectorised!({
            for ((o, x), y) in dst.iter_mut().zip(a).zip(b) {
                *o = x + y;
            }
        });
    }

    fn embedding_forward(
        &self,
        out: &mut [f32],
        idx: &[u32],
        wte: &[f32],
        wpe: Option<&[f32]>,
        pos: usize,
        t: usize,
        c: usize,
    ) {
        embedding::forward(out, idx, wte, wpe, pos, t, c);
    }

    fn embedding_backward(
        &self,
        dwte: &mut [f32],
        dwpe: Option<&mut [f32]>,
        dout: &[f32],
        idx: &[u32],
        t: usize,
        c: usize,
    ) {
        embedding::backward(dwte, dwpe, dout, idx, t, c);
    }

    fn layernorm_forward(
        &self,
        out: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
        inp: &[f32],
        weight: &[f32],
        bias: Option<&[f32]>,
        n: usize,
        c: usize,
        eps: f32,
    ) {
        layernorm::forward(out, mean, rstd, inp, weight, bias, n, c, eps);
    }

    fn layernorm_backward(
        &self,
        dinp: &mut [f32],
        dweight: Option<&mut [f32]>,
        dbias: Option<&mut [f32]>,
        dout: &[f32],
        inp: &[f32],
        weight: &[f32],
        mean: &[f32],
        rstd: &[f32],
        n: usize,
        c: usize,
    ) {
        layernorm::backward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, n, c);
    }

    fn matmul(
        &self,
        dst: &mut [f32],
        lhs: Mat<&[f32]>,
        rhs: Mat<&[f32]>,
        acc: Accumulate,
        epilogue: Epilogue<'_, '_, Self>,
    ) {
        let (lhs, rhs) = (mat(lhs), mat(rhs));
        if !matches!(epilogue, Epilogue::None) {
            assert_eq!(
                acc,
                Accumulate::Overwrite,
                "an epilogue writes its destination"
            );
        }
        if self.dtype == Dtype::Bf16 {
            return matmul_bf16(&self.bf16_scratch, dst, (lhs, rhs), acc, epilogue);
        }
        match epilogue {
            Epilogue::None => matmul::matmul(dst, lhs, rhs, acc),
            Epilogue::Bias(bias) => linear::with_bias(dst, lhs, rhs, bias),
            Epilogue::Activation { bias, act, out } => {
                linear::with_activation(dst, out, lhs, rhs, bias, act)
            }
            Epilogue::ActivationGrad { act, pre } => {
                linear::with_activation_grad(dst, lhs, rhs, pre, act)
            }
        }
    }

    fn pack(&self, w: Mat<&[f32]>, ty: WeightType) -> Result<Packed> {
        let w = mat(w);
        match ty {
            WeightType::F32 => Err(Error::Weights(
                "f32 weights are not packed: they stay in the parameter buffer".into(),
            )),
            WeightType::Bf16 => Ok(Packed::Bf16(bf16::Bf16Panels::from_f32(w))),
            WeightType::Q8_0 | WeightType::Q4_0 => {
                Ok(Packed::Quant(quant::QuantMatrix::quantize(w, ty)?))
            }
        }
    }

    fn repack(&self, dst: &mut Packed, w: Mat<&[f32]>) -> Result<()> {
        let w = mat(w);
        match dst {
            Packed::Bf16(panels) if panels.shape() == (w.rows(), w.cols()) => {
                panels.fill(w);
                Ok(())
            }
            Packed::Bf16(panels) => Err(Error::Weights(format!(
                "a ({}, {}) matrix repacked into bf16 panels of {:?}",
                w.rows(),
                w.cols(),
                panels.shape()
            ))),
            Packed::Quant(_) => Err(Error::Weights(
                "quantized weights are packed once, not rewritten".into(),
            )),
        }
    }

    fn training_weights(&self) -> Option<WeightType> {
        match self.dtype {
            Dtype::F32 => None,
            Dtype::Bf16 => Some(WeightType::Bf16),
        }
    }

    fn pack_blocks(&self, ty: WeightType, in_out: (usize, usize), bytes: &[u8]) -> Result<Packed> {
        let (k, n) = in_out;
        match ty {
            WeightType::Bf16 if bytes.len() == 2 * k * n => {
                // One tensor at a time in f32 (exact: the values are bf16 already).
                let values: Vec<f32> = bytes
                    .chunks_exact(2)
                    .map(|b| bf16::to_f32(u16::from_le_bytes([b[0], b[1]])))
                    .collect();
                Ok(Packed::Bf16(bf16::Bf16Panels::from_f32(
                    MatRef::new(&values, n, k).t(),
                )))
            }
            WeightType::Q8_0 | WeightType::Q4_0 => Ok(Packed::Quant(
                quant::QuantMatrix::from_blocks(ty, in_out, bytes)?,
            )),
            _ => Err(Error::Weights(format!(
                "{} bytes of {} for a ({k}, {n}) matrix",
                bytes.len(),
                ty.name()
            ))),
        }
    }

    fn matmul_packed(
        &self,
        dst: &mut [f32],
        lhs: Mat<&[f32]>,
        w: &Packed,
        epilogue: Epilogue<'_, '_, Self>,
    ) {
        let (lhs, (k, n)) = (mat(lhs), w.shape());
        assert_eq!(lhs.cols(), k, "matmul_packed: inner dimensions");
        let pre = &mut dst[..lhs.rows() * n];
        match w {
            Packed::Bf16(panels) => match self.bf16_scratch.try_lock() {
                Ok(mut kept) => kept.matmul_packed(pre, lhs, panels),
                Err(_) => bf16::Bf16Scratch::default().matmul_packed(pre, lhs, panels),
            },
            Packed::Quant(q) => match self.quant_scratch.try_lock() {
                Ok(mut kept) => {
                    let (rows, transposed) = &mut *kept;
                    rows.fill(lhs);
                    quant::matmul(pre, rows, q, transposed);
                }
                Err(_) => {
                    let mut rows = quant::QuantizedRows::default();
                    rows.fill(lhs);
                    quant::matmul(pre, &rows, q, &mut Vec::new());
                }
            },
        }
        match epilogue {
            Epilogue::None => {}
            Epilogue::Bias(bias) => add_bias(pre, bias),
            Epilogue::Activation { bias, act, out } => {
                if let Some(bias) = bias {
                    add_bias(pre, bias);
                }
                activation::forward(&mut out[..pre.len()], pre, act);
            }
            Epilogue::ActivationGrad { .. } => {
                panic!(
                    "matmul_packed: packed weights are for inference, no gradient runs through them"
                )
            }
        }
    }

    fn packed_rows(
        &self,
        out: &mut [f32],
        idx: &[u32],
        table: &Packed,
        wpe: Option<&[f32]>,
        pos: usize,
        t: usize,
    ) {
        let c = table.shape().0;
        out[..idx.len() * c]
            .par_chunks_mut(c.max(1))
            .zip(idx)
            .enumerate()
            .for_each(|(i, (row, &id))| {
                table.column(id as usize, row);
                if let Some(wpe) = wpe {
                    let p = &wpe[(pos + i % t) * c..][..c];
                    row.iter_mut().zip(p).for_each(|(r, p)| *r += p);
                }
            });
    }

    fn bias_backward(&self, dbias: &mut [f32], dout: &[f32], n: usize, cols: usize) {
        linear::bias_backward(dbias, dout, n, cols);
    }

    fn attention_forward(
        &self,
        out: &mut [f32],
        lse: &mut [f32],
        q: &[f32],
        kv: &[f32],
        dims: AttentionDims,
        dropout: Option<Dropout>,
    ) {
        self.with_attention_scratch(attention::scratch_len(dims), |scratch| {
            attention::forward(out, lse, scratch, (q, kv), dims, dropout.as_ref())
        });
    }

    fn attention_decode(
        &self,
        out: &mut [f32],
        lse: &mut [f32],
        q: &[f32],
        caches: &[(&[f32], AttentionDims)],
    ) {
        let len = attention::decode_scratch_len(caches);
        self.with_attention_scratch(len, |scratch| {
            attention::decode(out, lse, scratch, q, caches)
        });
    }

    fn attention_backward(
        &self,
        dqkv: &mut [f32],
        dout: &[f32],
        qkv: &[f32],
        lse: &[f32],
        dims: AttentionDims,
        dropout: Option<Dropout>,
    ) {
        self.with_attention_scratch(attention::scratch_len(dims), |scratch| {
            attention::backward(dqkv, scratch, dout, qkv, lse, dims, dropout.as_ref())
        });
    }

    fn rmsnorm_forward(
        &self,
        out: &mut [f32],
        rstd: &mut [f32],
        inp: &[f32],
        weight: &[f32],
        n: usize,
        c: usize,
        eps: f32,
    ) {
        rmsnorm::forward(out, rstd, inp, weight, (n, c, eps));
    }

    fn rmsnorm_backward(
        &self,
        dinp: &mut [f32],
        dweight: Option<&mut [f32]>,
        dout: &[f32],
        inp: &[f32],
        weight: &[f32],
        rstd: &[f32],
        n: usize,
        c: usize,
    ) {
        rmsnorm::backward(dinp, dweight, dout, inp, weight, rstd, n, c);
    }

    fn rope_forward(&self, x: &mut [f32], table: &[f32], dims: RopeDims) {
        rope::forward(x, table, dims);
    }

    fn rope_backward(&self, dx: &mut [f32], table: &[f32], dims: RopeDims) {
        rope::backward(dx, table, dims);
    }

    fn swiglu_forward(&self, out: &mut [f32], fc: &[f32], n: usize, i: usize) {
        swiglu::forward(out, fc, n, i);
    }

    fn swiglu_backward(&self, dfc: &mut [f32], dout: &[f32], fc: &[f32], n: usize, i: usize) {
        swiglu::backward(dfc, dout, fc, n, i);
    }

    fn copy_columns(
        &self,
        dst: &mut [f32],
        src: &[f32],
        (rows, cols): (usize, usize),
        (src_stride, first): (usize, usize),
    ) {
        for (r, row) in dst[..rows * cols].chunks_exact_mut(cols).enumerate() {
            row.copy_from_slice(&src[r * src_stride + first..][..cols]);
        }
    }

    fn residual(&self, branch: &mut [f32], skip: &[f32], dropout: Option<Dropout>) {
        if let Some(d) = dropout {
            dropout::apply(&d, branch);
        }
        vectorised!({
            for (o, s) in branch.iter_mut().zip(skip) {
                *o += s;
            }
        });
    }

    fn dropout(&self, x: &mut [f32], d: Dropout) {
        dropout::apply(&d, x);
    }

    fn cross_entropy(
        &self,
        losses: &mut [f32],
        logits: &mut [f32],
        targets: &[u32],
        v: usize,
        dloss: Option<f32>,
    ) -> f32 {
        let n = targets.len();
        let (losses, logits) = (&mut losses[..n], &mut logits[..n * v]);
        match dloss {
            Some(w) => loss::forward_backward_inplace(losses, logits, targets, v, w),
            None => loss::forward(losses, logits, targets, v),
        }
        loss::mean(losses, targets)
    }

    fn sum_of_squares(&self, grads: &[f32], partials: &mut [f64]) {
        adamw::sum_of_squares_by_chunk(grads, partials)
    }

    fn adamw(
        &self,
        params: &mut [f32],
        grads: &[f32],
        m: &mut [f32],
        v: &mut [f32],
        groups: &[ParamGroup],
        step: AdamWStep,
        norm: f32,
    ) {
        adamw::update(params, grads, m, v, groups, step, norm)
    }

    fn on_host_mut<R>(&self, dst: &mut [f32], f: impl FnOnce(&mut [f32]) -> R) -> R {
        f(dst)
    }

    fn run<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        on_pool(work)
    }
}

/// Run `work` on a thread of the global pool, with the other workers kept
/// awake until it returns.
///
/// A parallel loop started by a pool thread hands half its work straight to
/// the other workers; started from outside the pool, every loop is queued and
/// its caller sleeps until it finishes. And a worker that runs out of work
/// soon goes to sleep, so the next loop first has to wake it (tens of
/// microseconds on a virtual machine, against loops of a few hundred). A
/// training step runs hundreds of loops, so it runs here: on the pool, with
/// every other worker polling for work (as OpenMP's threads spin between
/// parallel regions) instead of sleeping.
pub fn on_pool<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    let done = &AtomicBool::new(false);
    rayon::scope(|scope| {
        let owner = rayon::current_thread_index();
        for _ in 1..rayon::current_num_threads() {
            scope.spawn(move |_| {
                // Never on the thread running `work`: it would wait here for
                // `done`, which only `work`, further down its stack, can set.
                if rayon::current_thread_index() == owner {
                    return;
                }
                let mut idle_polls = 0u32;
                while !done.load(Ordering::Acquire) {
                    if rayon::yield_now() == Some(rayon::Yield::Executed) {
                        idle_polls = 0;
                    } else if idle_polls % 64 == 63 {
                        // Let the OS run anything else waiting for this core
                        // (more threads than cores, other processes).
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                    idle_polls = idle_polls.wrapping_add(1);
                }
            });
        }
        // Set when `work` returns or panics: a panic that left the other
        // workers polling would keep the scope, and so the caller, waiting
        // for ever instead of passing the panic on.
        let _release = SetOnDrop(done);
        work()
    })
}

/// Sets its flag when dropped, on return and on unwinding alike.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Start the global thread pool with `threads` workers (`None`: one per core),
/// and check the instruction set level `LMFORGE_SIMD` asks for, if any (see
/// [`simd`]). Results are deterministic for a given thread count and level.
/// Returns the thread count in use.
pub fn init_threads(threads: Option<usize>) -> Result<usize> {
    if let Some(0) = threads {
        return Err(Error::Config("--threads must be at least 1".into()));
    }
    if let Some(level) = simd::level_from_env()? {
        simd::set_level(level)?;
    }
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        builder = builder.num_threads(n);
    }
    // A pool that already exists (a second call in one process, e.g. in tests) is kept.
    let _ = builder.build_global();
    Ok(rayon::current_num_threads())
}

#[cfg(test)]
mod tests {
    use super::on_pool;
    use rayon::prelude::*;
    use std::time::Duration;

    fn parallel_sum(n: u64) -> u64 {
        (0..n).into_par_iter().map(|i| i * i).sum()
    }

    #[test]
    fn on_pool_returns_what_the_work_computes() {
        let expected: u64 = (0..100_000u64).map(|i| i * i).sum();
        assert_eq!(on_pool(|| parallel_sum(100_000)), expected);
        // Nested: work already on the pool.
        assert_eq!(on_pool(|| on_pool(|| parallel_sum(100_000))), expected);
    }

    /// A panic in the work (or in a parallel loop it runs) reaches the
    /// caller, and the pool still runs work afterwards: the polling workers
    /// are released, not left waiting for a flag the work never set.
    #[test]
    fn a_panic_in_the_work_reaches_the_caller() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let caught = std::panic::catch_unwind(|| {
                on_pool(|| (0..1000u64).into_par_iter().for_each(|i| assert!(i != 500)))
            });
            done.send(caught.is_err()).unwrap();
        });
        let panicked = finished
            .recv_timeout(Duration::from_secs(60))
            .expect("on_pool hung after its work panicked");
        assert!(panicked, "the work's panic did not reach the caller");
        assert_eq!(on_pool(|| parallel_sum(10)), 285);
    }

    /// Several threads entering the pool at once, each keeping the other
    /// workers polling, all finish (no worker waits on a flag that only work
    /// further down its own stack could set).
    #[test]
    fn concurrent_callers_all_finish() {
        let (done, finished) = std::sync::mpsc::channel();
        for caller in 0..4u64 {
            let done = done.clone();
            std::thread::spawn(move || {
                for round in 0..50 {
                    let n = 1000 + caller * 100 + round;
                    let expected: u64 = (0..n).map(|i| i * i).sum();
                    assert_eq!(on_pool(|| parallel_sum(n)), expected);
                }
                done.send(caller).unwrap();
            });
        }
        for _ in 0..4 {
            finished
                .recv_timeout(Duration::from_secs(120))
                .expect("a caller of on_pool never finished");
        }
    }
}

/// The packed products through the seam, against the f32 product of the
/// same (rounded) values.
#[cfg(test)]
mod packed_tests {
    use super::*;
    use crate::backend::Activation;
    use crate::rng::Rng;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed, 0);
        (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
    }

    fn round_bf16(v: &[f32]) -> Vec<f32> {
        v.iter().map(|x| bf16::to_f32(bf16::to_bf16(*x))).collect()
    }

    /// `x (m, k) @ w (k, n)` in f64, from f32 values.
    fn exact(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k)
                    .map(|p| x[i * k + p] as f64 * w[p * n + j] as f64)
                    .sum();
                out[i * n + j] = s as f32;
            }
        }
        out
    }

    #[test]
    fn bf16_packed_product_with_epilogues_is_the_f32_product_of_the_rounded_values() {
        let be = Cpu::new();
        for (m, k, n) in [(1, 32, 20), (3, 64, 37), (9, 70, 33)] {
            let (x, w, bias) = (random(m * k, 1), random(k * n, 2), random(n, 3));
            // Stored `(OUT, IN)`, viewed `(IN, OUT)`: the LM head's stride order.
            let w_t: Vec<f32> = (0..n * k).map(|i| w[(i % k) * n + i / k]).collect();
            let packed = be
                .pack(Mat::new(&w_t[..], n, k).t(), WeightType::Bf16)
                .unwrap();
            let mut want = exact(&round_bf16(&x), &round_bf16(&w), m, k, n);
            want.iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v += bias[i % n]);
            let (mut pre, mut out) = (vec![0.0; m * n], vec![0.0; m * n]);
            let epilogue = Epilogue::Activation {
                bias: Some(&bias[..]),
                act: Activation::Gelu,
                out: &mut out[..],
            };
            be.matmul_packed(&mut pre, Mat::new(&x, m, k), &packed, epilogue);
            let mut act = vec![0.0; m * n];
            activation::forward(&mut act, &pre, Activation::Gelu);
            for i in 0..m * n {
                // f32 sums of k exact products: k 2^-24 relative to sum |x w| <= k.
                let tol = (k as f32 + 2.0) * 2f32.powi(-24) * k as f32;
                assert!(
                    (pre[i] - want[i]).abs() <= tol,
                    "({m},{k},{n}) {i}: {} vs {}",
                    pre[i],
                    want[i]
                );
                assert_eq!(out[i], act[i], "the activation of the product");
            }
        }
    }

    #[test]
    fn packed_rows_read_the_tables_rows_and_add_positions() {
        let be = Cpu::new();
        let (v, c) = (5, 64);
        let table = random(v * c, 4);
        let wpe = random(3 * c, 5);
        for ty in [WeightType::Bf16, WeightType::Q8_0, WeightType::Q4_0] {
            let packed = be.pack(Mat::new(&table[..], v, c).t(), ty).unwrap();
            let mut out = vec![0.0; 2 * c];
            be.packed_rows(&mut out, &[4, 1], &packed, Some(&wpe), 1, 2);
            let step = match ty {
                WeightType::Bf16 => 2f32.powi(-8),
                WeightType::Q8_0 => 0.5 / 127.0 + 1e-3,
                _ => 0.5 / 8.0 * 2.0 + 1e-3,
            };
            for (i, &(id, pos)) in [(4usize, 1usize), (1, 2)].iter().enumerate() {
                for j in 0..c {
                    let want = table[id * c + j] + wpe[pos * c + j];
                    let got = out[i * c + j];
                    assert!(
                        (got - want).abs() <= step,
                        "{ty:?} row {i} col {j}: {got} vs {want}"
                    );
                }
            }
        }
        let err = be.pack(Mat::new(&table[..], v, c), WeightType::F32).err();
        assert!(err.expect("f32 is not packed").to_string().contains("f32"));
    }
}
