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
//! A Llama-family model uses Hugging Face's `LlamaForCausalLM` names, whose
//! linear layers are `nn.Linear`, stored `(OUT, IN)` (`KVC = n_kv_head * hs`,
//! `I = intermediate_size`):
//!
//! | tensor | shape |
//! |---|---|
//! | `model.embed_tokens.weight` | `(V, C)` |
//! | `model.layers.{l}.input_layernorm.weight` | `(C)` (RMS norm gain) |
//! | `model.layers.{l}.self_attn.{q,k,v}_proj.weight` | `(C, C)`, `(KVC, C)`, `(KVC, C)` |
//! | `model.layers.{l}.self_attn.{q,k,v}_proj.bias` (Qwen2) | `(C)`, `(KVC)`, `(KVC)` |
//! | `model.layers.{l}.self_attn.o_proj.weight` | `(C, C)` |
//! | `model.layers.{l}.post_attention_layernorm.weight` | `(C)` |
//! | `model.layers.{l}.mlp.{gate,up}_proj.weight` | `(I, C)` each |
//! | `model.layers.{l}.mlp.down_proj.weight` | `(C, I)` |
//! | `model.norm.weight` | `(C)` |
//! | `lm_head.weight` (untied only) | `(V, C)` |
//!
//! `q`, `k`, `v` are laid out one after the other (and their biases after
//! them), so together they are one `(C + 2 KVC, C)` matrix: the block runs
//! them as one fused `c_attn` product, as GPT-2's. Likewise `gate` and `up`
//! form one `(2I, C)` product, `c_fc`, whose output SwiGLU splits in two.
//!
//! With LoRA (see [`super::lora`]), the adapters follow every base tensor, for
//! each layer `l` and target `m` (`attn.c_attn`, `attn.c_proj`, `mlp.c_fc`,
//! `mlp.c_proj`), named as PEFT names them under `base_model.model.`:
//! `transformer.h.{l}.{m}.lora_A.weight` `(r, IN)` and `...lora_B.weight` `(OUT, r)`.
//! A Llama's are named after its own layers (`model.layers.{l}.self_attn.q_proj.lora_A.weight`
//! `(r, C)`, `...q_proj.lora_B.weight` `(C, r)`, likewise `k`, `v`, `o`, `mlp.gate`, `up`,
//! `down`): an adapter on `q_proj` adapts only the query rows of the fused `c_attn`,
//! its part of the fused output, exactly as PEFT's adapter on the separate `q_proj`.

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

/// A layer norm's gain and optional bias, or an RMS norm's gain.
#[derive(Debug, Clone)]
pub struct NormParams {
    pub weight: Range<usize>,
    pub bias: Option<Range<usize>>,
    pub kind: NormKind,
}

/// Which normalisation, with the epsilon added to its variance (or mean square).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NormKind {
    /// Layer norm (GPT-2): centred, scaled, with an optional bias.
    Layer { eps: f32 },
    /// RMS norm (Llama family): scaled by the root mean square only.
    Rms { eps: f32 },
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
    /// Low-rank adapters, when LoRA targets this layer: one on all its
    /// outputs, or (a fused Llama layer) one on each adapted part.
    pub lora: Vec<LoraParams>,
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
    /// Sizes saturate instead of wrapping: the layout of a configuration too
    /// big to address still lists its true shapes, which
    /// [`ParamLayout::count`] adds up (its ranges are then meaningless).
    fn add(&mut self, name: String, shape: &[usize]) -> Range<usize> {
        let size = shape.iter().fold(1usize, |n, &d| n.saturating_mul(d));
        let range = self.total..self.total.saturating_add(size);
        self.total = range.end;
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

    fn norm(&mut self, prefix: &str, c: usize, bias: bool, eps: f32) -> NormParams {
        NormParams {
            weight: self.add(format!("{prefix}.weight"), &[c]),
            bias: self.add_if(bias, format!("{prefix}.bias"), &[c]),
            kind: NormKind::Layer { eps },
        }
    }

    fn rms_norm(&mut self, name: String, c: usize, eps: f32) -> NormParams {
        NormParams {
            weight: self.add(name, &[c]),
            bias: None,
            kind: NormKind::Rms { eps },
        }
    }

    /// `nn.Linear` layers applied as one product: their `(OUT_k, IN)` weights
    /// one after the other (one `(sum OUT_k, IN)` matrix), then their biases.
    fn fused_out_in(
        &mut self,
        parts: &[(String, usize)],
        fan_in: usize,
        bias: bool,
    ) -> LinearParams {
        let start = self.total;
        for (name, out) in parts {
            self.add(format!("{name}.weight"), &[*out, fan_in]);
        }
        let weight = start..self.total;
        let bias_start = self.total;
        for (name, out) in parts.iter().filter(|_| bias) {
            self.add(format!("{name}.bias"), &[*out]);
        }
        LinearParams {
            weight,
            bias: bias.then_some(bias_start..self.total),
            fan_in,
            fan_out: parts.iter().map(|(_, out)| out).sum(),
            layout: WeightLayout::OutIn,
            lora: Vec::new(),
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
            lora: Vec::new(),
        }
    }

    /// Append adapters for the output features `out` of `linear`, named
    /// after the weight tensor of those outputs (a part of a fused
    /// `(OUT, IN)` weight, or an `(IN, OUT)` weight whole).
    fn adapt(&mut self, linear: &mut LinearParams, out: Range<usize>, rank: usize, scale: f32) {
        let rows = match linear.layout {
            WeightLayout::OutIn => {
                let start = linear.weight.start;
                start + out.start * linear.fan_in..start + out.end * linear.fan_in
            }
            WeightLayout::InOut => {
                assert_eq!(
                    out,
                    0..linear.fan_out,
                    "an (IN, OUT) weight is adapted whole"
                );
                linear.weight.clone()
            }
        };
        let prefix = self.tensors[self
            .tensors
            .iter()
            .position(|t| t.range == rows)
            .expect("the adapted rows are one weight tensor")]
        .name
        .trim_end_matches(".weight")
        .to_string();
        let a = self.add(format!("{prefix}.lora_A.weight"), &[rank, linear.fan_in]);
        let b = self.add(format!("{prefix}.lora_B.weight"), &[out.len(), rank]);
        linear.lora.push(LoraParams {
            a,
            b,
            rank,
            scale,
            out,
        });
    }

    /// Adapters on every block's `cfg.lora` targets, after the base tensors.
    fn adapt_blocks(&mut self, blocks: &mut [BlockParams], cfg: &ModelConfig) {
        let Some(lora) = &cfg.lora else { return };
        for block in blocks {
            for target in &lora.targets {
                for (linear, out) in block.targets_mut(*target) {
                    self.adapt(linear, out, lora.rank, lora.scale());
                }
            }
        }
    }
}

impl BlockParams {
    /// The linear layers a LoRA target names in this block, each with the
    /// output features it adapts: all of them, or a Llama's part of a fused
    /// layer (`c_attn = [q | k | v]`, `c_fc = [gate | up]`).
    fn targets_mut(&mut self, target: LoraTarget) -> Vec<(&mut LinearParams, Range<usize>)> {
        use LoraTarget::*;
        let (c, qkv) = (self.c_attn.fan_in, self.c_attn.fan_out);
        let (kvc, i) = ((qkv - c) / 2, self.c_fc.fan_out / 2);
        fn whole(linear: &mut LinearParams) -> (&mut LinearParams, Range<usize>) {
            let out = 0..linear.fan_out;
            (linear, out)
        }
        match target {
            CAttn => vec![whole(&mut self.c_attn)],
            CProj => vec![whole(&mut self.attn_proj), whole(&mut self.mlp_proj)],
            CFc => vec![whole(&mut self.c_fc)],
            QProj => vec![(&mut self.c_attn, 0..c)],
            KProj => vec![(&mut self.c_attn, c..c + kvc)],
            VProj => vec![(&mut self.c_attn, c + kvc..qkv)],
            OProj => vec![whole(&mut self.attn_proj)],
            GateProj => vec![(&mut self.c_fc, 0..i)],
            UpProj => vec![(&mut self.c_fc, i..2 * i)],
            DownProj => vec![whole(&mut self.mlp_proj)],
        }
    }

    /// The first parameter of the block (its first layer norm's gain).
    pub fn start(&self) -> usize {
        self.ln_1.weight.start
    }
}

impl ParamLayout {
    /// The number of parameters, added up from the tensors' shapes in
    /// `u128`: exact even where `total` saturated.
    pub fn count(&self) -> u128 {
        let size = |t: &TensorSpec| t.shape.iter().map(|&d| d as u128).product::<u128>();
        self.tensors.iter().map(size).sum()
    }

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
        if cfg.arch == Arch::Llama {
            return Self::llama(cfg, b);
        }
        let eps = cfg.norm_eps();
        let wte = b.add("transformer.wte.weight".into(), &[v, c]);
        let wpe = b.add("transformer.wpe.weight".into(), &[cfg.block_size, c]);
        let mut blocks: Vec<BlockParams> = (0..cfg.n_layer)
            .map(|l| {
                let p = format!("transformer.h.{l}");
                BlockParams {
                    ln_1: b.norm(&format!("{p}.ln_1"), c, cfg.bias, eps),
                    c_attn: b.linear(&format!("{p}.attn.c_attn"), c, 3 * c, cfg.qkv_bias),
                    attn_proj: b.linear(&format!("{p}.attn.c_proj"), c, c, cfg.bias),
                    ln_2: b.norm(&format!("{p}.ln_2"), c, cfg.bias, eps),
                    c_fc: b.linear(&format!("{p}.mlp.c_fc"), c, 4 * c, cfg.bias),
                    mlp_proj: b.linear(&format!("{p}.mlp.c_proj"), 4 * c, c, cfg.bias),
                }
            })
            .collect();
        let ln_f = Some(b.norm("transformer.ln_f", c, cfg.bias, eps));
        let untied = b.add_if(!cfg.tie_embeddings, "lm_head.weight".into(), &[v, c]);
        let lm_head = Some(LinearParams {
            weight: untied.unwrap_or(wte.clone()),
            bias: b.add_if(cfg.lm_head_bias, "lm_head.bias".into(), &[v]),
            fan_in: c,
            fan_out: v,
            layout: WeightLayout::OutIn,
            lora: Vec::new(),
        });
        let base_total = b.total;
        b.adapt_blocks(&mut blocks, cfg);
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

    /// The Llama-family layout (see the module's table).
    fn llama(cfg: &ModelConfig, mut b: Builder) -> Self {
        let llama = cfg
            .llama
            .as_ref()
            .expect("validated: arch llama has its shape");
        let (v, c, eps) = (cfg.vocab_size, cfg.n_embd, llama.rms_norm_eps);
        let (kvc, i) = (cfg.n_kv_head() * cfg.head_size(), llama.intermediate_size);
        let wte = b.add("model.embed_tokens.weight".into(), &[v, c]);
        let mut blocks: Vec<BlockParams> = (0..cfg.n_layer)
            .map(|l| {
                let p = format!("model.layers.{l}");
                let (attn, mlp) = (format!("{p}.self_attn"), format!("{p}.mlp"));
                let qkv = [
                    (format!("{attn}.q_proj"), c),
                    (format!("{attn}.k_proj"), kvc),
                    (format!("{attn}.v_proj"), kvc),
                ];
                let ln_1 = b.rms_norm(format!("{p}.input_layernorm.weight"), c, eps);
                let c_attn = b.fused_out_in(&qkv, c, cfg.qkv_bias);
                let attn_proj = b.fused_out_in(&[(format!("{attn}.o_proj"), c)], c, false);
                let ln_2 = b.rms_norm(format!("{p}.post_attention_layernorm.weight"), c, eps);
                let gate_up = [
                    (format!("{mlp}.gate_proj"), i),
                    (format!("{mlp}.up_proj"), i),
                ];
                let c_fc = b.fused_out_in(&gate_up, c, false);
                let mlp_proj = b.fused_out_in(&[(format!("{mlp}.down_proj"), c)], i, false);
                BlockParams {
                    ln_1,
                    c_attn,
                    attn_proj,
                    ln_2,
                    c_fc,
                    mlp_proj,
                }
            })
            .collect();
        let ln_f = Some(b.rms_norm("model.norm.weight".into(), c, eps));
        let untied = b.add_if(!cfg.tie_embeddings, "lm_head.weight".into(), &[v, c]);
        let lm_head = Some(LinearParams {
            weight: untied.unwrap_or(wte.clone()),
            bias: None,
            fan_in: c,
            fan_out: v,
            layout: WeightLayout::OutIn,
            lora: Vec::new(),
        });
        let base_total = b.total;
        b.adapt_blocks(&mut blocks, cfg);
        ParamLayout {
            tensors: b.tensors,
            total: b.total,
            base_total,
            wte,
            wpe: 0..0,
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
            llama: None,
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

    /// SmolLM2-135M's shape: 9 query heads over 3 key/value heads, tied head.
    #[test]
    fn smollm2_135m_has_its_parameter_count() {
        let cfg = ModelConfig {
            arch: Arch::Llama,
            vocab_size: 49152,
            block_size: 2048,
            n_layer: 30,
            n_head: 9,
            n_embd: 576,
            dropout: 0.0,
            norm: Norm::Pre,
            activation: Activation::Silu,
            tie_embeddings: true,
            bias: false,
            qkv_bias: false,
            lm_head_bias: false,
            llama: Some(crate::model::LlamaConfig {
                n_kv_head: 3,
                intermediate_size: 1536,
                rope_theta: 100_000.0,
                rope_scaling: Default::default(),
                rms_norm_eps: 1e-5,
            }),
            lora: None,
        };
        cfg.validate().unwrap();
        let layout = ParamLayout::new(&cfg);
        assert_eq!(layout.total, 134_515_008);
        assert_eq!(crate::memory::param_count(&cfg).unwrap(), layout.total);
        let k = layout
            .get("model.layers.29.self_attn.k_proj.weight")
            .unwrap();
        assert_eq!(k.shape, vec![192, 576]);
        // q, k, v are one (C + 2 KVC, C) matrix.
        let q = layout
            .get("model.layers.29.self_attn.q_proj.weight")
            .unwrap();
        assert_eq!(
            layout.blocks[29].c_attn.weight,
            q.range.start..q.range.start + 960 * 576
        );
        // The decoding cache keeps only the 3 key/value heads: 2 x 192 per position.
        let (acts, _) =
            crate::model::activations::sizes(&cfg, 2048, crate::model::Purpose::Inference);
        assert_eq!((acts.kv_cache.layers, acts.kv_cache.width), (30, 384));
        assert_eq!(acts.qkv.layers, 1);
    }
}
