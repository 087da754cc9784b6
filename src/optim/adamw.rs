//! AdamW's state and settings: the two moments (laid out like the
//! trainable parameters: those from `from` on, see [`crate::model::Grads`]),
//! the update count, and which tensors decay. The update itself
//! is the backend's kernel (its math: `backend/cpu/adamw.rs`).

use crate::backend::{AdamWStep, Backend, ParamGroup};
use crate::error::{Error, Result};
use crate::model::TensorSpec;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

/// Optimizer state on the backend.
pub struct AdamW<B: Backend> {
    pub config: AdamWConfig,
    pub m: B::Buf,
    pub v: B::Buf,
    /// Number of updates applied so far.
    pub step: u64,
    /// Each trainable tensor's range (counted from `from`) and whether weight
    /// decay applies to it (matrices decay; biases and layer-norm gains do not).
    groups: Vec<ParamGroup>,
    /// The first trained parameter; those before it are frozen.
    pub from: usize,
}

fn groups(tensors: &[TensorSpec], from: usize) -> Vec<ParamGroup> {
    tensors
        .iter()
        .filter(|t| t.range.start >= from)
        .map(|t| ParamGroup {
            range: t.range.start - from..t.range.end - from,
            decays: t.decays(),
        })
        .collect()
}

/// Number of trained parameters: those of `tensors` from `from` on.
fn trained(tensors: &[TensorSpec], from: usize) -> usize {
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
        let total = trained(tensors, from);
        Ok(AdamW {
            config,
            m: be.zeros(total)?,
            v: be.zeros(total)?,
            step: 0,
            groups: groups(tensors, from),
            from,
        })
    }

    /// The state a checkpoint saved: moments `m`, `v` after `step` updates.
    pub fn from_state(
        be: &B,
        config: AdamWConfig,
        tensors: &[TensorSpec],
        from: usize,
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
        Ok(AdamW {
            config,
            m: be.upload(m)?,
            v: be.upload(v)?,
            step,
            groups: groups(tensors, from),
            from,
        })
    }

    /// Count a step that makes no update (its loss was not finite).
    pub fn skip(&mut self) {
        self.step += 1;
    }

    /// One update of the trained parameters (`from` on) with learning rate
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
        let (n, from) = (B::len(grads), self.from);
        be.adamw(
            B::view_mut(params, from..from + n),
            B::view(grads, 0..n),
            B::view_mut(&mut self.m, 0..n),
            B::view_mut(&mut self.v, 0..n),
            &self.groups,
            step,
        )
    }
}
