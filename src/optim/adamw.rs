//! AdamW's state and settings: the two moments (laid out like the
//! trainable parameters: those from `from` on, see [`crate::model::Grads`]),
//! the update count, and which tensors decay. The update itself
//! is the backend's kernel (its math: `backend/cpu/adamw.rs`).

use crate::backend::{AdamWStep, Backend, NORM_CHUNK, ParamGroup};
use crate::error::{Error, Result};
use crate::model::TensorSpec;
use serde::{Deserialize, Serialize};
use std::ops::Range;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

/// Optimizer state on the backend: the moments of the trained parameters,
/// or under ZeRO-1 (`--zero 1`) of this rank's shard of them only.
pub struct AdamW<B: Backend> {
    pub config: AdamWConfig,
    pub m: B::Buf,
    pub v: B::Buf,
    /// Number of updates applied so far.
    pub step: u64,
    /// Each tensor's part of the shard (counted from the shard's start) and
    /// whether weight decay applies to it (matrices decay; biases and
    /// layer-norm gains do not).
    groups: Vec<ParamGroup>,
    /// The first trained parameter; those before it are frozen.
    pub from: usize,
    /// The trained parameters (counted from `from`) whose moments this
    /// optimizer holds: all of them, or one rank's shard.
    pub shard: Range<usize>,
    /// The gradient norm's partial sums over the shard, one per [`NORM_CHUNK`].
    partials: Vec<f64>,
}

/// The tensors' parts inside `shard` of the trained parameters (those from `from` on).
fn groups(tensors: &[TensorSpec], from: usize, shard: &Range<usize>) -> Vec<ParamGroup> {
    tensors
        .iter()
        .filter(|t| t.range.start >= from)
        .filter_map(|t| {
            let lo = (t.range.start - from).max(shard.start);
            let hi = (t.range.end - from).min(shard.end);
            (lo < hi).then(|| ParamGroup {
                range: lo - shard.start..hi - shard.start,
                decays: t.decays(),
            })
        })
        .collect()
}

/// Number of trained parameters: those of `tensors` from `from` on.
pub fn trained(tensors: &[TensorSpec], from: usize) -> usize {
    tensors
        .iter()
        .map(|t| t.range.end)
        .max()
        .unwrap_or(0)
        .saturating_sub(from)
}

impl<B: Backend> AdamW<B> {
    /// Fresh state (zero moments) for the parameters `tensors` lay out, from `from` on.
    pub fn new(be: &B, config: AdamWConfig, tensors: &[TensorSpec], from: usize) -> Result<Self> {
        Self::sharded(be, config, tensors, from, 0..trained(tensors, from))
    }

    /// Fresh state (zero moments) for the shard `shard` of the parameters
    /// `tensors` lay out from `from` on (counted from `from`).
    pub fn sharded(
        be: &B,
        config: AdamWConfig,
        tensors: &[TensorSpec],
        from: usize,
        shard: Range<usize>,
    ) -> Result<Self> {
        let len = shard.len();
        Ok(AdamW {
            config,
            m: be.zeros_swept(len)?,
            v: be.zeros_swept(len)?,
            step: 0,
            groups: groups(tensors, from, &shard),
            from,
            partials: vec![0.0; len.div_ceil(NORM_CHUNK)],
            shard,
        })
    }

    /// The state a checkpoint saved: moments `m`, `v` of all trained
    /// parameters after `step` updates, of which the shard `shard` is kept.
    pub fn from_state(
        be: &B,
        config: AdamWConfig,
        (tensors, from, shard): (&[TensorSpec], usize, Range<usize>),
        (m, v): (Vec<f32>, Vec<f32>),
        step: u64,
    ) -> Result<Self> {
        let total = trained(tensors, from);
        if m.len() != total || v.len() != total {
            return Err(Error::Data(format!(
                "saved AdamW moments hold {} and {} values, the model trains {total} parameters",
                m.len(),
                v.len()
            )));
        }
        let keep = |mut all: Vec<f32>| {
            if shard.len() == total {
                return all;
            }
            all.truncate(shard.end);
            all.drain(..shard.start);
            all
        };
        let mut opt = Self::sharded(be, config, tensors, from, shard.clone())?;
        opt.m = be.upload(keep(m))?;
        opt.v = be.upload(keep(v))?;
        opt.step = step;
        Ok(opt)
    }

    /// Count a step that makes no update (its loss was not finite).
    pub fn skip(&mut self) {
        self.step += 1;
    }

    /// The partial sums of squares of `grads`, this shard's gradients, one
    /// per [`NORM_CHUNK`] (see [`Backend::sum_of_squares`]).
    pub fn sum_of_squares(&mut self, be: &B, grads: B::View<'_>) -> &[f64] {
        be.sum_of_squares(grads, &mut self.partials);
        &self.partials
    }

    /// One update of all trained parameters (`from` on) with learning rate
    /// `lr`; `grads` holds their gradients only. If `grad_clip > 0`, gradients are
    /// first scaled so their norm is at most `grad_clip`. Returns the gradient
    /// norm before clipping; when it is not finite nothing was updated.
    pub fn update(
        &mut self,
        be: &B,
        params: &mut B::Buf,
        grads: &B::Buf,
        lr: f32,
        grad_clip: f32,
    ) -> f32 {
        let n = self.shard.len();
        let norm = crate::backend::norm_of(self.sum_of_squares(be, B::view(grads, 0..n)));
        let from = self.from;
        self.apply(
            be,
            B::view_mut(params, from..from + n),
            B::view(grads, 0..n),
            (lr, grad_clip),
            norm,
        );
        norm
    }

    /// One update of the shard's parameters `params` from their gradients
    /// `grads`, clipped by `norm` (the norm of all gradients, every rank's).
    pub fn apply(
        &mut self,
        be: &B,
        params: B::ViewMut<'_>,
        grads: B::View<'_>,
        (lr, grad_clip): (f32, f32),
        norm: f32,
    ) {
        self.step += 1;
        let c = self.config;
        let step = AdamWStep {
            lr,
            beta1: c.beta1,
            beta2: c.beta2,
            eps: c.eps,
            weight_decay: c.weight_decay,
            grad_clip,
            t: self.step,
        };
        let (m, v) = (&mut self.m, &mut self.v);
        let n = self.shard.len();
        be.adamw(
            params,
            grads,
            B::view_mut(m, 0..n),
            B::view_mut(v, 0..n),
            &self.groups,
            step,
            norm,
        )
    }
}
