//! Where every parameter lives in the one flat `f32` buffer.
//!
//! Parameters, their gradients and the two AdamW moments are four buffers of
//! the same length; a [`ParamLayout`] names the ranges inside them. Names and
//! shapes are those of Hugging Face's GPT-2 (`GPT2LMHeadModel`), including its
//! `Conv1D` layout: a linear layer's weight is stored `(in, out)` and applied
//! as `out = x @ W + b`. A checkpoint is therefore these ranges written under
//! these names, with no transposes.
//!
//! | tensor | shape | course notebook equivalent |
//! |---|---|---|
//! | `transformer.wte.weight` | `(V, C)` | `token_embedding_table.weight` |
//! | `transformer.wpe.weight` | `(block_size, C)` | `position_embedding_table.weight` |
//! | `transformer.h.{l}.ln_1.weight/bias` | `(C)` | `blocks[l].ln1` |
//! | `transformer.h.{l}.attn.c_attn.weight/bias` | `(C, 3C)`, `(3C)` | `[query heads; key heads; value heads]` stacked, transposed |
//! | `transformer.h.{l}.attn.c_proj.weight/bias` | `(C, C)`, `(C)` | `blocks[l].sa.proj`, transposed |
//! | `transformer.h.{l}.ln_2.weight/bias` | `(C)` | `blocks[l].ln2` |
//! | `transformer.h.{l}.mlp.c_fc.weight/bias` | `(C, 4C)`, `(4C)` | `blocks[l].ffwd.net[0]`, transposed |
//! | `transformer.h.{l}.mlp.c_proj.weight/bias` | `(4C, C)`, `(C)` | `blocks[l].ffwd.net[2]`, transposed |
//! | `transformer.ln_f.weight/bias` | `(C)` | `ln_f` |
//! | `lm_head.weight` (untied only) | `(V, C)` | `lm_head.weight` (not transposed) |
//! | `lm_head.bias` (if enabled) | `(V)` | `lm_head.bias` |
//!
//! The bigram model has one tensor, `token_embedding_table.weight` `(V, V)`.
//!
//! With LoRA (see [`super::lora`]), the adapters follow every base tensor, for
//! each layer `l` and target `m` (`attn.c_attn`, `attn.c_proj`, `mlp.c_fc`,
//! `mlp.c_proj`), named as PEFT names them under `base_model.model.`:
//! `transformer.h.{l}.{m}.lora_A.weight` `(r, IN)` and `...lora_B.weight` `(OUT, r)`.

use super::config::{Arch, LoraTarget, ModelConfig};
use super::lora::LoraParams;
use std::ops::Range;

/// One named tensor: its shape and where it sits in the flat buffers.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub range: Range<usize>,
}

impl TensorSpec {
    /// AdamW's weight decay applies to matrices (linear weights, embeddings),
    /// not to biases or layer-norm gains.
    pub fn decays(&self) -> bool {
        self.shape.len() >= 2
    }
}

/// A layer norm's gain and optional bias.
#[derive(Debug, Clone)]
pub struct NormParams {
    pub weight: Range<usize>,
    pub bias: Option<Range<usize>>,
}

/// How a linear layer's weight matrix is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// `(IN, OUT)`: transformer-block linears (Hugging Face `Conv1D`).
    InOut,
    /// `(OUT, IN)`: the LM head (`nn.Linear`, or the tied token embedding).
    OutIn,
}

/// A linear layer: its weight (`fan_in x fan_out` values, stored as `layout`
/// says) and optional bias (`fan_out`).
#[derive(Debug, Clone)]
pub struct LinearParams {
    pub weight: Range<usize>,
    pub bias: Option<Range<usize>>,
    pub fan_in: usize,
    pub fan_out: usize,
    pub layout: WeightLayout,
    /// Low-rank adapters, when LoRA targets this layer.
    pub lora: Option<LoraParams>,
}

/// One transformer block.
#[derive(Debug, Clone)]
pub struct BlockParams {
    pub ln_1: NormParams,
    pub c_attn: LinearParams,
    pub attn_proj: LinearParams,
    pub ln_2: NormParams,
    pub c_fc: LinearParams,
    pub mlp_proj: LinearParams,
}

/// Named ranges for the whole model.
#[derive(Debug, Clone)]
pub struct ParamLayout {
    pub tensors: Vec<TensorSpec>,
    pub total: usize,
    /// The end of the base model's tensors (= `total` without LoRA; the adapters follow).
    pub base_total: usize,
    /// Token embedding (GPT) or the bigram table.
    pub wte: Range<usize>,
    pub wpe: Range<usize>,
    pub blocks: Vec<BlockParams>,
    pub ln_f: Option<NormParams>,
    /// `(V, C)`: `lm_head.weight`, or `wte` itself when the head is tied to it.
    pub lm_head: Option<LinearParams>,
}

struct Builder {
    tensors: Vec<TensorSpec>,
    total: usize,
}

impl Builder {
    fn add(&mut self, name: String, shape: &[usize]) -> Range<usize> {
        let size: usize = shape.iter().product();
        let range = self.total..self.total + size;
        self.total += size;
        self.tensors.push(TensorSpec {
            name,
            shape: shape.to_vec(),
            range: range.clone(),
        });
        range
    }

    fn add_if(&mut self, present: bool, name: String, shape: &[usize]) -> Option<Range<usize>> {
        present.then(|| self.add(name, shape))
    }

    fn norm(&mut self, prefix: &str, c: usize, bias: bool) -> NormParams {
        NormParams {
            weight: self.add(format!("{prefix}.weight"), &[c]),
            bias: self.add_if(bias, format!("{prefix}.bias"), &[c]),
        }
    }

    /// Weight first, bias right after: gradient code borrows the two together.
    fn linear(&mut self, prefix: &str, fan_in: usize, fan_out: usize, bias: bool) -> LinearParams {
        LinearParams {
            weight: self.add(format!("{prefix}.weight"), &[fan_in, fan_out]),
            bias: self.add_if(bias, format!("{prefix}.bias"), &[fan_out]),
            fan_in,
            fan_out,
            layout: WeightLayout::InOut,
            lora: None,
        }
    }

    /// Append `linear`'s adapters, named after its weight.
    fn adapt(&mut self, linear: &mut LinearParams, rank: usize, scale: f32) {
        let prefix = self.tensors[self
            .tensors
            .iter()
            .position(|t| t.range == linear.weight)
            .expect("the weight is laid out")]
        .name
        .trim_end_matches(".weight")
        .to_string();
        let a = self.add(format!("{prefix}.lora_A.weight"), &[rank, linear.fan_in]);
        let b = self.add(format!("{prefix}.lora_B.weight"), &[linear.fan_out, rank]);
        linear.lora = Some(LoraParams { a, b, rank, scale });
    }
}

impl BlockParams {
    /// The linear layers a LoRA target names in this block.
    fn targets_mut(&mut self, target: LoraTarget) -> Vec<&mut LinearParams> {
        match target {
            LoraTarget::CAttn => vec![&mut self.c_attn],
            LoraTarget::CProj => vec![&mut self.attn_proj, &mut self.mlp_proj],
            LoraTarget::CFc => vec![&mut self.c_fc],
        }
    }

    /// The first parameter of the block (its first layer norm's gain).
    pub fn start(&self) -> usize {
        self.ln_1.weight.start
    }
}

impl ParamLayout {
    pub fn new(cfg: &ModelConfig) -> Self {
        let mut b = Builder {
            tensors: Vec::new(),
            total: 0,
        };
        let (v, c) = (cfg.vocab_size, cfg.n_embd);
        if cfg.arch == Arch::Bigram {
            let wte = b.add("token_embedding_table.weight".into(), &[v, v]);
            return ParamLayout {
                tensors: b.tensors,
                total: b.total,
                base_total: b.total,
                wte,
                wpe: 0..0,
                blocks: Vec::new(),
                ln_f: None,
                lm_head: None,
            };
        }
        let wte = b.add("transformer.wte.weight".into(), &[v, c]);
        let wpe = b.add("transformer.wpe.weight".into(), &[cfg.block_size, c]);
        let mut blocks: Vec<BlockParams> = (0..cfg.n_layer)
            .map(|l| {
                let p = format!("transformer.h.{l}");
                BlockParams {
                    ln_1: b.norm(&format!("{p}.ln_1"), c, cfg.bias),
                    c_attn: b.linear(&format!("{p}.attn.c_attn"), c, 3 * c, cfg.qkv_bias),
                    attn_proj: b.linear(&format!("{p}.attn.c_proj"), c, c, cfg.bias),
                    ln_2: b.norm(&format!("{p}.ln_2"), c, cfg.bias),
                    c_fc: b.linear(&format!("{p}.mlp.c_fc"), c, 4 * c, cfg.bias),
                    mlp_proj: b.linear(&format!("{p}.mlp.c_proj"), 4 * c, c, cfg.bias),
                }
            })
            .collect();
        let ln_f = Some(b.norm("transformer.ln_f", c, cfg.bias));
        let untied = b.add_if(!cfg.tie_embeddings, "lm_head.weight".into(), &[v, c]);
        let lm_head = Some(LinearParams {
            weight: untied.unwrap_or(wte.clone()),
            bias: b.add_if(cfg.lm_head_bias, "lm_head.bias".into(), &[v]),
            fan_in: c,
            fan_out: v,
            layout: WeightLayout::OutIn,
            lora: None,
        });
        let base_total = b.total;
        if let Some(lora) = &cfg.lora {
            for block in &mut blocks {
                for target in &lora.targets {
                    for linear in block.targets_mut(*target) {
                        b.adapt(linear, lora.rank, lora.scale());
                    }
                }
            }
        }
        ParamLayout {
            tensors: b.tensors,
            total: b.total,
            base_total,
            wte,
            wpe,
            blocks,
            ln_f,
            lm_head,
        }
    }

    pub fn get(&self, name: &str) -> Option<&TensorSpec> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{Activation, Norm};

    #[test]
    fn gpt2_124m_has_124m_parameters() {
        let cfg = ModelConfig {
            arch: Arch::Gpt,
            vocab_size: 50257,
            block_size: 1024,
            n_layer: 12,
            n_head: 12,
            n_embd: 768,
            dropout: 0.0,
            norm: Norm::Pre,
            activation: Activation::Gelu,
            tie_embeddings: true,
            bias: true,
            qkv_bias: true,
            lm_head_bias: false,
            lora: None,
        };
        let layout = ParamLayout::new(&cfg);
        assert_eq!(layout.total, 124_439_808);
        assert_eq!(layout.tensors.len(), 2 + 12 * 12 + 2);
        assert_eq!(
            layout
                .get("transformer.h.3.attn.c_attn.weight")
                .unwrap()
                .shape,
            vec![768, 2304]
        );
    }
}
