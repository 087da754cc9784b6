//! LoRA: low-rank adapters on a frozen linear layer (Hu et al. 2021, as PEFT).
//!
//! A linear layer `y = x W + b` gets two small matrices per adapter, stored
//! as PEFT stores them: `A: (r, IN)` and `B: (OUT_k, r)`, with `s = alpha / r`.
//! An adapter covers the layer's output features `out` (`OUT_k` of them):
//! all of them, or, in a Llama's fused `c_attn = [q | k | v]` and
//! `c_fc = [gate | up]`, the part one `nn.Linear` of Hugging Face's model
//! computes, which is what PEFT adapts there. In math, with `ΔW_k` the
//! `(IN, OUT)` matrix that is `s · Aᵀ Bᵀ` on the columns `out` and zero
//! elsewhere:
//! ```text
//! W_eff = W + Σ_k ΔW_k                      formed per call in a scratch, in W's own
//!                                           layout: (IN, OUT) += s·AᵀBᵀ for GPT-2's
//!                                           Conv1D, rows `out` of (OUT, IN) += s·B A
//!                                           for nn.Linear
//! y     = x W_eff + b                       (the layer's usual product and epilogue)
//!
//! backward, from dy (n, OUT), per adapter, dy_k = dy[:, out] (n, OUT_k):
//! dx  = dy W_effᵀ                           (through the same epilogue as before)
//! u   = s · x Aᵀ                            (n, r)
//! dB += dy_kᵀ u                             (OUT_k, r)
//! v   = s · dy_k B                          (n, r)
//! dA += vᵀ x                                (r, IN)
//! ```
//! `dW` is not computed: `W` is frozen. Forming `W_eff` costs `IN·OUT_k·r`
//! multiply-adds per adapter and call, a fraction `r / n` of the layer's
//! product, and lets the adapted layer keep its fused bias and activation
//! epilogues; the adapter gradients cost `O(n·r·(IN + OUT_k))`, far below
//! the `n·IN·OUT` of `dW`. `B` starts at zero, so training starts exactly
//! at the base model.
//!
//! Adapters sit after every base tensor in the flat parameter buffer, so
//! the trainable parameters of a LoRA fine-tune are one tail of it (see
//! [`super::Grads`]).

use super::params::{LinearParams, WeightLayout};
use crate::backend::{Accumulate, Backend, Epilogue, Mat};
use std::ops::Range;
use std::sync::Mutex;

/// One adapter: `A (rank, fan_in)` then `B (out.len(), rank)`, adjacent,
/// on the layer's output features `out`.
#[derive(Debug, Clone)]
pub struct LoraParams {
    pub a: Range<usize>,
    pub b: Range<usize>,
    pub rank: usize,
    pub scale: f32,
    pub out: Range<usize>,
}

/// Scratch for adapted layers, one of each reused by every layer:
/// `W_eff` (the largest adapted `IN x OUT`), `s·B`, `u` and `v` (`n x r`).
pub struct LoraScratch<B: Backend> {
    w_eff: Mutex<B::Buf>,
    scaled_b: Mutex<B::Buf>,
    uv: Mutex<(B::Buf, B::Buf)>,
}

impl<B: Backend> LoraScratch<B> {
    pub fn new(be: &B, max_weight: usize, max_b: usize, rows_x_rank: usize) -> crate::Result<Self> {
        Ok(LoraScratch {
            w_eff: Mutex::new(be.zeros(max_weight)?),
            scaled_b: Mutex::new(be.zeros(max_b)?),
            uv: Mutex::new((be.zeros(rows_x_rank)?, be.zeros(rows_x_rank)?)),
        })
    }
}

impl LoraParams {
    /// `w += ΔW` for a layer shaped `(fan_in, fan_out)` whose weight is stored
    /// from `at` in `w` as `layout` says, given `a` (`A`) and `scaled_b` (`s·B`).
    #[allow(clippy::too_many_arguments)]
    pub fn add_delta<B: Backend>(
        &self,
        be: &B,
        w: &mut B::Buf,
        at: usize,
        (a, scaled_b): (B::View<'_>, B::View<'_>),
        layout: WeightLayout,
        (fan_in, fan_out): (usize, usize),
    ) {
        let a = Mat::new(a, self.rank, fan_in);
        let b = Mat::new(scaled_b, self.out.len(), self.rank);
        match layout {
            WeightLayout::OutIn => {
                let rows = at + self.out.start * fan_in..at + self.out.end * fan_in;
                be.matmul(B::view_mut(w, rows), b, a, Accumulate::Add, Epilogue::None);
            }
            WeightLayout::InOut => {
                assert_eq!(self.out, 0..fan_out, "an (IN, OUT) weight is adapted whole");
                let all = at..at + fan_in * fan_out;
                be.matmul(
                    B::view_mut(w, all),
                    a.t(),
                    b.t(),
                    Accumulate::Add,
                    Epilogue::None,
                );
            }
        }
    }

    /// Accumulate `dA`, `dB` (adjacent in `grads`, `A` first) from `x (n, IN)`
    /// and the whole layer's `dy (n, OUT)`, of which this adapter reads its columns.
    #[allow(clippy::too_many_arguments)]
    pub fn backward<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        scratch: &LoraScratch<B>,
        (da, db): (B::ViewMut<'_>, B::ViewMut<'_>),
        x: Mat<B::View<'_>>,
        dy: Mat<B::View<'_>>,
    ) {
        let (n, fan_in, r) = (x.rows, x.cols, self.rank);
        let dy_k = Mat {
            data: B::view_from(dy.data, self.out.start),
            cols: self.out.len(),
            ..dy
        };
        let mut guard = scratch.uv.lock().unwrap_or_else(|e| e.into_inner());
        let (u, v) = &mut *guard;
        let a_t = Mat::new(B::view(params, self.a.clone()), r, fan_in).t();
        be.matmul(
            B::view_mut(u, 0..n * r),
            x,
            a_t,
            Accumulate::Overwrite,
            Epilogue::None,
        );
        be.scale(B::view_mut(u, 0..n * r), self.scale);
        let u_mat = Mat::new(B::view(u, 0..n * r), n, r);
        be.matmul(db, dy_k.t(), u_mat, Accumulate::Add, Epilogue::None);
        let b = Mat::new(B::view(params, self.b.clone()), self.out.len(), r);
        be.matmul(
            B::view_mut(v, 0..n * r),
            dy_k,
            b,
            Accumulate::Overwrite,
            Epilogue::None,
        );
        be.scale(B::view_mut(v, 0..n * r), self.scale);
        let v_mat = Mat::new(B::view(v, 0..n * r), n, r);
        be.matmul(da, v_mat.t(), x, Accumulate::Add, Epilogue::None);
    }
}

/// Run `f` with `linear`'s `W_eff = W + Σ_k ΔW_k` as an `(IN, OUT)` matrix.
pub fn with_adapted_weight<B: Backend, R>(
    be: &B,
    params: &B::Buf,
    scratch: &LoraScratch<B>,
    linear: &LinearParams,
    f: impl FnOnce(Mat<B::View<'_>>) -> R,
) -> R {
    let n_w = linear.fan_in * linear.fan_out;
    let mut w_eff = scratch.w_eff.lock().unwrap_or_else(|e| e.into_inner());
    let mut scaled_b = scratch.scaled_b.lock().unwrap_or_else(|e| e.into_inner());
    be.copy(
        B::view_mut(&mut w_eff, 0..n_w),
        B::view(params, linear.weight.clone()),
    );
    for lora in &linear.lora {
        let n_b = lora.out.len() * lora.rank;
        be.copy(
            B::view_mut(&mut scaled_b, 0..n_b),
            B::view(params, lora.b.clone()),
        );
        be.scale(B::view_mut(&mut scaled_b, 0..n_b), lora.scale);
        let factors = (B::view(params, lora.a.clone()), B::view(&scaled_b, 0..n_b));
        let shape = (linear.fan_in, linear.fan_out);
        lora.add_delta(be, &mut w_eff, 0, factors, linear.layout, shape);
    }
    f(linear.weight_mat::<B>(B::view(&w_eff, 0..n_w)))
}
