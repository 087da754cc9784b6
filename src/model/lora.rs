//! LoRA: low-rank adapters on a frozen linear layer (Hu et al. 2021, as PEFT).
//!
//! A linear layer `y = x W + b` (`W: (IN, OUT)`, Hugging Face's `Conv1D`
//! layout) gets two small matrices, stored as PEFT stores them:
//! `A: (r, IN)` and `B: (OUT, r)`, with `s = alpha / r`:
//! ```text
//! W_eff = W + s · Aᵀ Bᵀ                     (IN, OUT), formed per call in a scratch
//! y     = x W_eff + b                       (the layer's usual product and epilogue)
//!
//! backward, from dy (n, OUT):
//! dx  = dy W_effᵀ                           (through the same epilogue as before)
//! u   = s · x Aᵀ                            (n, r)
//! dB += dyᵀ u                               (OUT, r)
//! v   = s · dy B                            (n, r)
//! dA += vᵀ x                                (r, IN)
//! ```
//! `dW` is not computed: `W` is frozen. Forming `W_eff` costs `IN·OUT·r`
//! multiply-adds per call, a fraction `r / n` of the layer's product, and
//! lets the adapted layer keep its fused bias and activation epilogues; the
//! adapter gradients cost `O(n·r·(IN + OUT))`, far below the `n·IN·OUT` of
//! `dW`. `B` starts at zero, so training starts exactly at the base model.
//!
//! Adapters sit after every base tensor in the flat parameter buffer, so
//! the trainable parameters of a LoRA fine-tune are one tail of it (see
//! [`super::Grads`]).

use crate::backend::{Accumulate, Backend, Epilogue, Mat};
use std::ops::Range;
use std::sync::Mutex;

/// One layer's adapters: `A (rank, fan_in)` then `B (fan_out, rank)`, adjacent.
#[derive(Debug, Clone)]
pub struct LoraParams {
    pub a: Range<usize>,
    pub b: Range<usize>,
    pub rank: usize,
    pub scale: f32,
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
    fn a_t<'b, B: Backend>(&self, params: &'b B::Buf, fan_in: usize) -> Mat<B::View<'b>> {
        Mat::new(B::view(params, self.a.clone()), self.rank, fan_in).t()
    }

    /// Run `f` with `W_eff = W + s·Aᵀ Bᵀ` as an `(IN, OUT)` matrix.
    pub fn with_weight<B: Backend, R>(
        &self,
        be: &B,
        params: &B::Buf,
        scratch: &LoraScratch<B>,
        (weight, fan_in, fan_out): (Range<usize>, usize, usize),
        f: impl FnOnce(Mat<B::View<'_>>) -> R,
    ) -> R {
        let (n_w, n_b) = (fan_in * fan_out, fan_out * self.rank);
        let mut w_eff = scratch.w_eff.lock().unwrap_or_else(|e| e.into_inner());
        let mut scaled_b = scratch.scaled_b.lock().unwrap_or_else(|e| e.into_inner());
        be.copy(B::view_mut(&mut w_eff, 0..n_w), B::view(params, weight));
        be.copy(
            B::view_mut(&mut scaled_b, 0..n_b),
            B::view(params, self.b.clone()),
        );
        be.scale(B::view_mut(&mut scaled_b, 0..n_b), self.scale);
        let b_t = Mat::new(B::view(&scaled_b, 0..n_b), fan_out, self.rank).t();
        let a_t = self.a_t::<B>(params, fan_in);
        let dst = B::view_mut(&mut w_eff, 0..n_w);
        be.matmul(dst, a_t, b_t, Accumulate::Add, Epilogue::None);
        f(Mat::new(B::view(&w_eff, 0..n_w), fan_in, fan_out))
    }

    /// Accumulate `dA`, `dB` (adjacent in `grads`, `A` first) from `x (n, IN)`
    /// and `dy (n, OUT)`.
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
        let (n, fan_in, fan_out, r) = (x.rows, x.cols, dy.cols, self.rank);
        let mut guard = scratch.uv.lock().unwrap_or_else(|e| e.into_inner());
        let (u, v) = &mut *guard;
        let a_t = self.a_t::<B>(params, fan_in);
        be.matmul(
            B::view_mut(u, 0..n * r),
            x,
            a_t,
            Accumulate::Overwrite,
            Epilogue::None,
        );
        be.scale(B::view_mut(u, 0..n * r), self.scale);
        let u_mat = Mat::new(B::view(u, 0..n * r), n, r);
        be.matmul(db, dy.t(), u_mat, Accumulate::Add, Epilogue::None);
        let b = Mat::new(B::view(params, self.b.clone()), fan_out, r);
        be.matmul(
            B::view_mut(v, 0..n * r),
            dy,
            b,
            Accumulate::Overwrite,
            Epilogue::None,
        );
        be.scale(B::view_mut(v, 0..n * r), self.scale);
        let v_mat = Mat::new(B::view(v, 0..n * r), n, r);
        be.matmul(da, v_mat.t(), x, Accumulate::Add, Epilogue::None);
    }
}
