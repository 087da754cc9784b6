//! The two layers the wiring uses most, as calls to the backend: how their
//! parameters are cut from the flat buffers and which kernels run.
//!
//! Linear (`W` stored `(IN, OUT)`, or `(OUT, IN)` for the LM head):
//! ```text
//! out = inp @ W + b                [act(out) too, in the product's epilogue]
//! dinp = dout @ W^T                [times act'(pre), in the epilogue]
//! dW  += inp^T @ dout              db += sum_n dout[n, :]
//! ```
//! Layer norm: one kernel each way (math in `backend/cpu/layernorm.rs`).

use super::params::{LinearParams, NormParams, WeightLayout};
use crate::backend::{Accumulate, Activation, Backend, Epilogue, Mat};

impl LinearParams {
    /// The weight as an `(IN, OUT)` matrix view (a transposed view for `OutIn`).
    fn weight<'b, B: Backend>(&self, params: &'b B::Buf) -> Mat<B::View<'b>> {
        let w = B::view(params, self.weight.clone());
        match self.layout {
            WeightLayout::InOut => Mat::new(w, self.fan_in, self.fan_out),
            WeightLayout::OutIn => Mat::new(w, self.fan_out, self.fan_in).t(),
        }
    }

    fn bias_of<'b, B: Backend>(&self, params: &'b B::Buf) -> Option<B::View<'b>> {
        self.bias.clone().map(|r| B::view(params, r))
    }

    /// `out (n, OUT) = inp (n, IN) @ W + b`.
    pub fn forward<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        out: B::ViewMut<'_>,
        inp: B::View<'_>,
        n: usize,
    ) {
        let epilogue = match self.bias_of::<B>(params) {
            Some(bias) => Epilogue::Bias(bias),
            None => Epilogue::None,
        };
        let inp = Mat::new(inp, n, self.fan_in);
        be.matmul(
            out,
            inp,
            self.weight::<B>(params),
            Accumulate::Overwrite,
            epilogue,
        );
    }

    /// `pre = inp @ W + b` and `out = act(pre)`, both kept.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_activated<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        pre: B::ViewMut<'_>,
        out: B::ViewMut<'_>,
        inp: B::View<'_>,
        n: usize,
        act: Activation,
    ) {
        let epilogue = Epilogue::Activation {
            bias: self.bias_of::<B>(params),
            act,
            out,
        };
        let inp = Mat::new(inp, n, self.fan_in);
        be.matmul(
            pre,
            inp,
            self.weight::<B>(params),
            Accumulate::Overwrite,
            epilogue,
        );
    }

    /// Overwrites `dinp` (with `through = Some((act, pre))`: the gradient of
    /// `pre`, whose activation was this layer's input) and accumulates into
    /// the weight and bias gradients in `grads`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        grads: &mut B::Buf,
        dinp: B::ViewMut<'_>,
        dout: B::View<'_>,
        inp: B::View<'_>,
        n: usize,
        through: Option<(Activation, B::View<'_>)>,
    ) {
        let (fan_in, fan_out) = (self.fan_in, self.fan_out);
        let dout_mat = Mat::new(dout, n, fan_out);
        let epilogue = match through {
            Some((act, pre)) => Epilogue::ActivationGrad { act, pre },
            None => Epilogue::None,
        };
        let w_t = self.weight::<B>(params).t();
        be.matmul(dinp, dout_mat, w_t, Accumulate::Overwrite, epilogue);
        let (dw, db) = pair_mut::<B>(grads, &self.weight, self.bias.as_ref());
        let inp_mat = Mat::new(inp, n, fan_in);
        match self.layout {
            WeightLayout::InOut => {
                be.matmul(dw, inp_mat.t(), dout_mat, Accumulate::Add, Epilogue::None)
            }
            WeightLayout::OutIn => {
                be.matmul(dw, dout_mat.t(), inp_mat, Accumulate::Add, Epilogue::None)
            }
        }
        if let Some(db) = db {
            be.bias_backward(db, dout, n, fan_out);
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
        let bias = self.bias.clone().map(|r| B::view(params, r));
        be.layernorm_forward(out, mean, rstd, inp, weight, bias, n, c);
    }

    /// Accumulates into `dinp` and the gain and bias gradients in `grads`.
    #[allow(clippy::too_many_arguments)]
    pub fn backward<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        grads: &mut B::Buf,
        dinp: B::ViewMut<'_>,
        dout: B::View<'_>,
        inp: B::View<'_>,
        stats: (B::View<'_>, B::View<'_>),
        n: usize,
        c: usize,
    ) {
        let weight = B::view(params, self.weight.clone());
        let (dw, db) = pair_mut::<B>(grads, &self.weight, self.bias.as_ref());
        let (mean, rstd) = stats;
        be.layernorm_backward(dinp, dw, db, dout, inp, weight, mean, rstd, n, c);
    }
}

/// Writable views of a weight's gradient and, when there is one, its bias's
/// (stored after it).
pub fn pair_mut<'g, B: Backend>(
    grads: &'g mut B::Buf,
    weight: &std::ops::Range<usize>,
    bias: Option<&std::ops::Range<usize>>,
) -> (B::ViewMut<'g>, Option<B::ViewMut<'g>>) {
    match bias {
        None => (B::view_mut(grads, weight.clone()), None),
        Some(bias) => {
            let (w, b) = B::view_pair_mut(grads, weight.clone(), bias.clone());
            (w, Some(b))
        }
    }
}
