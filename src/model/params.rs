//! Where every parameter lives in the one flat `f32` buffer.
//!
//! Parameters, their gradients and the two AdamW moments are four buffers of
//! the same length; a [`ParamLayout`] names the ranges inside them. The
//! tensors, their order, shapes and Hugging Face names are the model
//! family's ([`super::family`]: [`super::family::gpt2`] with the course's
//! names beside GPT-2's, [`super::family::llama`]); a checkpoint is these
//! ranges written under those names, with no transposes. The layout walks
//! the family's table and gathers each tensor into its place in the wiring:
//! a norm, or a linear layer whose weight may be several tensors side by side
//! (a Llama's `q`, `k`, `v` are one `(C + 2 KVC, C)` matrix, `c_attn`).
//!
//! With LoRA (see [`super::lora`]), the adapters follow every base tensor, for
//! each layer `l` and target `m` (`attn.c_attn`, `attn.c_proj`, `mlp.c_fc`,
//! `mlp.c_proj`), named as PEFT names them under `base_model.model.`:
//! `transformer.h.{l}.{m}.lora_A.weight` `(r, IN)` and `...lora_B.weight` `(OUT, r)`.
//! A Llama's are named after its own layers (`model.layers.{l}.self_attn.q_proj.lora_A.weight`
//! `(r, C)`, `...q_proj.lora_B.weight` `(C, r)`, likewise `k`, `v`, `o`, `mlp.gate`, `up`,
//! `down`): an adapter on `q_proj` adapts only the query rows of the fused `c_attn`,
//! its part of the fused output, exactly as PEFT's adapter on the separate `q_proj`.

use super::config::{LoraTarget, ModelConfig};
use super::family::{Family, Part, Placed, Slot};
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
    /// `(IN, OUT)`: GPT-2's block linears (Hugging Face `Conv1D`).
    InOut,
    /// `(OUT, IN)`: `nn.Linear` (a Llama's block linears, every LM head,
    /// the tied token embedding).
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

/// The ranges the tensors of one slot fill, gathered while laying out: a
/// weight (or gain) of one or more tensors side by side, and a bias likewise.
#[derive(Default, Clone)]
struct Filled {
    weight: Option<Range<usize>>,
    bias: Option<Range<usize>>,
    fan_in: usize,
    fan_out: usize,
}

/// What the tensors of one block (or those outside the blocks) filled, by slot.
#[derive(Default)]
struct Gathered {
    slots: Vec<(Slot, Filled)>,
}

/// `range` grown by `next`, which must follow it.
fn extend(range: Option<Range<usize>>, next: Range<usize>) -> Option<Range<usize>> {
    match range {
        None => Some(next),
        Some(r) => {
            debug_assert_eq!(r.end, next.start, "a slot's tensors sit side by side");
            Some(r.start..next.end)
        }
    }
}

impl Builder {
    /// Add one tensor of the family and record where it went.
    fn place(&mut self, family: &Family, p: Placed, cfg: &ModelConfig, into: &mut Gathered) {
        let t = p.tensor;
        if !t.when.holds(cfg) {
            return;
        }
        let shape = t.dims(cfg);
        let range = self.add(family.hf_name(p), &shape);
        let filled = into.slot(t.slot);
        match t.part {
            Part::Bias => filled.bias = extend(filled.bias.take(), range),
            Part::Weight => {
                filled.weight = extend(filled.weight.take(), range);
                // (IN, OUT) or (OUT, IN), as the layer's layout says.
                let in_out = layout_of(family, t.slot) == WeightLayout::InOut;
                if let [a, b] = shape[..] {
                    let (fan_in, out) = if in_out { (a, b) } else { (b, a) };
                    filled.fan_in = fan_in;
                    filled.fan_out = filled.fan_out.saturating_add(out);
                }
            }
        }
    }
}

/// How `slot`'s weight is stored: the family's block layout, but the LM
/// head (its own `lm_head.weight`, or the tied embedding) is always `(OUT, IN)`.
fn layout_of(family: &Family, slot: Slot) -> WeightLayout {
    match (slot, family.recipe) {
        (Slot::LmHead | Slot::Wte | Slot::Wpe, _) | (_, None) => WeightLayout::OutIn,
        (_, Some(recipe)) => recipe.linear,
    }
}

impl Gathered {
    fn slot(&mut self, slot: Slot) -> &mut Filled {
        let i = match self.slots.iter().position(|(s, _)| *s == slot) {
            Some(i) => i,
            None => {
                self.slots.push((slot, Filled::default()));
                self.slots.len() - 1
            }
        };
        &mut self.slots[i].1
    }

    fn take(&mut self, slot: Slot) -> Filled {
        std::mem::take(self.slot(slot))
    }

    /// The norm in `slot`, if the family has one there.
    fn norm(&mut self, slot: Slot, family: &Family, cfg: &ModelConfig) -> Option<NormParams> {
        let filled = self.take(slot);
        let recipe = family.recipe?;
        Some(NormParams {
            weight: filled.weight?,
            bias: filled.bias,
            kind: recipe.norm_kind(cfg),
        })
    }

    fn linear(&mut self, slot: Slot, family: &Family) -> LinearParams {
        let filled = self.take(slot);
        LinearParams {
            weight: filled.weight.expect("every block linear has a weight"),
            bias: filled.bias,
            fan_in: filled.fan_in,
            fan_out: filled.fan_out,
            layout: layout_of(family, slot),
            lora: Vec::new(),
        }
    }

    fn block(mut self, family: &Family, cfg: &ModelConfig) -> BlockParams {
        let mut norm = |slot| self.norm(slot, family, cfg).expect("a block has its norms");
        let (ln_1, ln_2) = (norm(Slot::Ln1), norm(Slot::Ln2));
        BlockParams {
            ln_1,
            c_attn: self.linear(Slot::CAttn, family),
            attn_proj: self.linear(Slot::AttnProj, family),
            ln_2,
            c_fc: self.linear(Slot::CFc, family),
            mlp_proj: self.linear(Slot::MlpProj, family),
        }
    }

    /// The token embedding (or bigram table), and the LM head `(V, C)`:
    /// `lm_head.weight`, or the embedding itself when tied. A family
    /// without blocks has no head (its table gives the logits).
    fn embedding_and_head(
        &mut self,
        family: &Family,
        cfg: &ModelConfig,
    ) -> (Range<usize>, Option<LinearParams>) {
        let wte = self
            .take(Slot::Wte)
            .weight
            .expect("every family embeds tokens");
        let head = self.take(Slot::LmHead);
        let lm_head = family.recipe.map(|_| LinearParams {
            weight: head.weight.unwrap_or(wte.clone()),
            bias: head.bias,
            fan_in: cfg.n_embd,
            fan_out: cfg.vocab_size,
            layout: WeightLayout::OutIn,
            lora: Vec::new(),
        });
        (wte, lm_head)
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

    /// Lay out `cfg`'s model: its family's tensors in order, then any adapters.
    pub fn new(cfg: &ModelConfig) -> Self {
        let family = cfg.family();
        let mut b = Builder {
            tensors: Vec::new(),
            total: 0,
        };
        let mut outside = Gathered::default();
        let mut place = |tensors: &'static [_], layer, into: &mut Gathered| {
            for tensor in tensors {
                b.place(family, Placed { tensor, layer }, cfg, into);
            }
        };
        place(family.before, None, &mut outside);
        // (The bigram's config has an `n_layer` too, but its family no block.)
        let n_blocks = if family.block.is_empty() {
            0
        } else {
            cfg.n_layer
        };
        let mut blocks: Vec<BlockParams> = (0..n_blocks)
            .map(|l| {
                let mut block = Gathered::default();
                place(family.block, Some(l), &mut block);
                block.block(family, cfg)
            })
            .collect();
        place(family.after, None, &mut outside);
        let (wte, lm_head) = outside.embedding_and_head(family, cfg);
        let ln_f = outside.norm(Slot::LnF, family, cfg);
        let wpe = outside.take(Slot::Wpe).weight.unwrap_or(0..0);
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

    pub fn get(&self, name: &str) -> Option<&TensorSpec> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{Activation, Arch, Norm};

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
