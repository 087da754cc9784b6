//! Parameter gradients, for the trainable tail of the parameters only.
//!
//! Fine-tuning may freeze a leading part of the flat parameter buffer: the
//! embeddings and the first blocks (`--freeze-embeddings`,
//! `--freeze-layers`), or every base tensor under LoRA, whose adapters are
//! laid out last. The gradient buffer (and AdamW's moments) then cover only
//! `from..total`: a frozen tensor has no gradient to compute or to store,
//! which is what lets a LoRA fine-tune of a model fit in about the memory
//! of its weights.

use crate::backend::Backend;
use std::ops::Range;

/// Gradients of the parameters `from..from + len(buf)`.
pub struct Grads<B: Backend> {
    pub buf: B::Buf,
    /// The first trainable parameter; everything before it is frozen.
    pub from: usize,
}

impl<B: Backend> Grads<B> {
    /// Room for the gradients of parameters `from..total`.
    pub fn new(be: &B, from: usize, total: usize) -> crate::Result<Self> {
        Ok(Grads {
            buf: be.zeros_swept(total - from)?,
            from,
        })
    }

    fn local(&self, range: &Range<usize>) -> Range<usize> {
        range.start - self.from..range.end - self.from
    }

    pub fn is_frozen(&self, range: &Range<usize>) -> bool {
        range.start < self.from
    }

    /// The gradient of a tensor, or `None` if it is frozen.
    pub fn get(&mut self, range: &Range<usize>) -> Option<B::ViewMut<'_>> {
        if self.is_frozen(range) {
            return None;
        }
        let local = self.local(range);
        Some(B::view_mut(&mut self.buf, local))
    }

    /// Two tensors' gradients (`second` after `first`, e.g. a weight and its
    /// bias), or `None` if the first is frozen.
    pub fn pair(
        &mut self,
        first: &Range<usize>,
        second: &Range<usize>,
    ) -> Option<(B::ViewMut<'_>, B::ViewMut<'_>)> {
        if self.is_frozen(first) {
            return None;
        }
        let (a, b) = (self.local(first), self.local(second));
        Some(B::view_pair_mut(&mut self.buf, a, b))
    }

    /// A weight's gradient and its optional bias's, or `None` if frozen.
    pub fn weight_and_bias(
        &mut self,
        weight: &Range<usize>,
        bias: Option<&Range<usize>>,
    ) -> Option<(B::ViewMut<'_>, Option<B::ViewMut<'_>>)> {
        match bias {
            None => self.get(weight).map(|w| (w, None)),
            Some(bias) => self.pair(weight, bias).map(|(w, b)| (w, Some(b))),
        }
    }
}
