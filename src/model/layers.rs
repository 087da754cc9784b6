//! The two layers the wiring uses most, as calls to the backend: how their
//! parameters are cut from the flat buffers and which kernels run.
//!
//! Linear (`W` stored `(IN, OUT)`, or `(OUT, IN)` for the LM head):
//! ```text
//! out = inp @ W + b                [act(out) too, in the product's epilogue]
//! dinp = dout @ W^T                [times act'(pre), in the epilogue]
//! dW  += inp^T @ dout              db += sum_n dout[n, :]
//! ```
//! With packed weights ([`super::packed`]: decoding's, or training's bf16
//! copy of the f32 masters) the forward product reads the packed matrix
//! instead (`Backend::matmul_packed`); backward always reads the f32 `W`.
//! With LoRA the product uses `W_eff = W + s·AᵀBᵀ` and backward adds the
//! adapters' gradients instead of `dW` (math in [`super::lora`]).
//!
//! Layer norm, or RMS norm for Llama-family models: one kernel each way
//! (math in `backend/cpu/layernorm.rs` and `backend/cpu/rmsnorm.rs`; an RMS
//! norm leaves `mean` unused).
//!
//! A frozen tensor (before [`Grads::from`]) gets no gradient: its layer
//! still passes the gradient of its input on.

use super::grads::Grads;
use super::lora::LoraScratch;
use super::packed::PackedWeights;
use super::params::{LinearParams, NormKind, NormParams, WeightLayout};
use crate::backend::{Accumulate, Activation, Backend, Epilogue, Mat};

/// What a layer reads its weights from: the flat parameters, for adapted
/// layers the LoRA scratch its effective weight is formed in, and for
/// decoding with `--weights` the packed matrices (which then take the place
/// of their ranges in `params`).
pub struct Weights<'p, B: Backend> {
    pub params: &'p B::Buf,
    pub lora: Option<&'p LoraScratch<B>>,
    pub packed: Option<&'p PackedWeights<B>>,
}

impl<B: Backend> Clone for Weights<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<B: Backend> Copy for Weights<'_, B> {}

/// Plain parameters, so the decoding functions take `&params` or packed `Weights` alike.
impl<'p, B: Backend> From<&'p B::Buf> for Weights<'p, B> {
    fn from(params: &'p B::Buf) -> Self {
        Weights::plain(params)
    }
}

impl<'p, B: Backend> Weights<'p, B> {
    /// Parameters without adapters.
    pub fn plain(params: &'p B::Buf) -> Self {
        Weights {
            params,
            lora: None,
            packed: None,
        }
    }

    /// Parameters with the matrices of `packed` read from there (decoding).
    pub fn packed(params: &'p B::Buf, packed: Option<&'p PackedWeights<B>>) -> Self {
        Weights {
            params,
            lora: None,
            packed,
        }
    }
}

impl LinearParams {
    /// Run `f` with the weight as an `(IN, OUT)` matrix view (a transposed
    /// view for `OutIn`; `W_eff` for an adapted layer).
    fn with_weight<B: Backend, R>(
        &self,
        be: &B,
        w: Weights<'_, B>,
        f: impl FnOnce(Mat<B::View<'_>>) -> R,
    ) -> R {
        if let Some(scratch) = w.lora.filter(|_| !self.lora.is_empty()) {
            return super::lora::with_adapted_weight(be, w.params, scratch, self, f);
        }
        f(self.weight_mat::<B>(B::view(w.params, self.weight.clone())))
    }

    /// This layer's packed weight, when `w` holds one.
    fn packed<'w, B: Backend>(&self, w: Weights<'w, B>) -> Option<&'w B::Packed> {
        w.packed.and_then(|p| p.get(&self.weight))
    }

    /// `weight`, stored as this layer's, as an `(IN, OUT)` matrix view.
    pub fn weight_mat<'w, B: Backend>(&self, weight: B::View<'w>) -> Mat<B::View<'w>> {
        match self.layout {
            WeightLayout::InOut => Mat::new(weight, self.fan_in, self.fan_out),
            WeightLayout::OutIn => Mat::new(weight, self.fan_out, self.fan_in).t(),
        }
    }

    fn bias_of<'b, B: Backend>(&self, params: &'b B::Buf) -> Option<B::View<'b>> {
        self.bias.clone().map(|r| B::view(params, r))
    }

    /// `out (n, OUT) = inp (n, IN) @ W + b`.
    pub fn forward<B: Backend>(
        &self,
        be: &B,
        w: Weights<'_, B>,
        out: B::ViewMut<'_>,
        inp: B::View<'_>,
        n: usize,
    ) {
        let epilogue = match self.bias_of::<B>(w.params) {
            Some(bias) => Epilogue::Bias(bias),
            None => Epilogue::None,
        };
        let inp = Mat::new(inp, n, self.fan_in);
        if let Some(packed) = self.packed(w) {
            return be.matmul_packed(out, inp, packed, epilogue);
        }
        self.with_weight(be, w, |weight| {
            be.matmul(out, inp, weight, Accumulate::Overwrite, epilogue)
        });
    }

    /// `pre = inp @ W + b` and `out = act(pre)`, both kept.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_activated<B: Backend>(
        &self,
        be: &B,
        w: Weights<'_, B>,
        pre: B::ViewMut<'_>,
        out: B::ViewMut<'_>,
        inp: B::View<'_>,
        n: usize,
        act: Activation,
    ) {
        let epilogue = Epilogue::Activation {
            bias: self.bias_of::<B>(w.params),
            act,
            out,
        };
        let inp = Mat::new(inp, n, self.fan_in);
        if let Some(packed) = self.packed(w) {
            return be.matmul_packed(pre, inp, packed, epilogue);
        }
        self.with_weight(be, w, |weight| {
            be.matmul(pre, inp, weight, Accumulate::Overwrite, epilogue)
        });
    }

    /// Overwrites `dinp` (with `through = Some((act, pre))`: the gradient of
    /// `pre`, whose activation was this layer's input) and accumulates into
    /// the weight and bias gradients (or the adapters') in `grads`. Reads the
    /// f32 weight, never `w.packed`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward<B: Backend>(
        &self,
        be: &B,
        w: Weights<'_, B>,
        grads: &mut Grads<B>,
        dinp: B::ViewMut<'_>,
        dout: B::View<'_>,
        inp: B::View<'_>,
        n: usize,
        through: Option<(Activation, B::View<'_>)>,
    ) {
        let dout_mat = Mat::new(dout, n, self.fan_out);
        let epilogue = match through {
            Some((act, pre)) => Epilogue::ActivationGrad { act, pre },
            None => Epilogue::None,
        };
        self.with_weight(be, w, |weight| {
            be.matmul(dinp, dout_mat, weight.t(), Accumulate::Overwrite, epilogue)
        });
        let inp_mat = Mat::new(inp, n, self.fan_in);
        if let Some(scratch) = w.lora {
            for lora in &self.lora {
                if let Some(dadapters) = grads.pair(&lora.a, &lora.b) {
                    lora.backward(be, w.params, scratch, dadapters, inp_mat, dout_mat);
                }
            }
        }
        let Some((dw, db)) = grads.weight_and_bias(&self.weight, self.bias.as_ref()) else {
            return;
        };
        match self.layout {
            WeightLayout::InOut => {
                be.matmul(dw, inp_mat.t(), dout_mat, Accumulate::Add, Epilogue::None)
            }
            WeightLayout::OutIn => {
                be.matmul(dw, dout_mat.t(), inp_mat, Accumulate::Add, Epilogue::None)
            }
        }
        if let Some(db) = db {
            be.bias_backward(db, dout, n, self.fan_out);
        }
    }
}

impl NormParams {
    /// Normalise `n` rows of `inp (n, c)`; `out`, `mean`, `rstd` as the kernel's.
    #[allow(clippy::too_many_arguments)]
    pub fn forward<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        out: B::ViewMut<'_>,
        mean: B::ViewMut<'_>,
        rstd: B::ViewMut<'_>,
        inp: B::View<'_>,
        n: usize,
        c: usize,
    ) {
        let weight = B::view(params, self.weight.clone());
        let eps = match self.kind {
            NormKind::Rms { eps } => return be.rmsnorm_forward(out, rstd, inp, weight, n, c, eps),
            NormKind::Layer { eps } => eps,
        };
        let bias = self.bias.clone().map(|r| B::view(params, r));
        be.layernorm_forward(out, mean, rstd, inp, weight, bias, n, c, eps);
    }

    /// Accumulates into `dinp` and the gain and bias gradients in `grads`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        grads: &mut Grads<B>,
        dinp: B::ViewMut<'_>,
        dout: B::View<'_>,
        inp: B::View<'_>,
        stats: (B::View<'_>, B::View<'_>),
        n: usize,
        c: usize,
    ) {
        let weight = B::view(params, self.weight.clone());
        let (dw, db) = match grads.weight_and_bias(&self.weight, self.bias.as_ref()) {
            Some((dw, db)) => (Some(dw), db),
            None => (None, None),
        };
        let (mean, rstd) = stats;
        if let NormKind::Rms { .. } = self.kind {
            return be.rmsnorm_backward(dinp, dw, dout, inp, weight, rstd, n, c);
        }
        be.layernorm_backward(dinp, dw, db, dout, inp, weight, mean, rstd, n, c);
    }
}
