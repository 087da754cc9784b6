//! Each model family described once: the tensors it stores, in the order
//! they sit in the flat parameter buffer, with their shapes, their Hugging
//! Face names, where each goes in the wiring, and their GGUF names and
//! layouts; and its block recipe (which norm, which positions, which
//! feed-forward).
//!
//! | family | file | Hugging Face class | GGUF architecture |
//! |---|---|---|---|
//! | GPT-2 (and the course's GPT) | [`gpt2`] | `GPT2LMHeadModel` | `gpt2` |
//! | Llama (Llama 2 and 3, Qwen2, Mistral, SmolLM, TinyLlama) | [`llama`] | `LlamaForCausalLM`, `Qwen2ForCausalLM` | `llama`, `qwen2` |
//! | the bigram table | here ([`BIGRAM`]) | | |
//!
//! Everything else reads these tables instead of restating them:
//! [`super::params`] lays the buffer out from them, [`super::block`] follows
//! the recipe, [`crate::checkpoint`] writes the zero biases a GPT-2 file
//! needs, and [`crate::gguf::family`] takes each tensor's GGUF name and
//! layout change from them.
//!
//! A shape is written in named dimensions ([`Dim`]): `V` (vocabulary), `C`
//! (`n_embd`), `T` (`block_size`), `QKV` (`C + 2 KVC`), `KVC` (`n_kv_head ×
//! head size`) and `F` (the feed-forward's hidden width: `4C`, or a Llama's
//! `intermediate_size`). Block tensors are named relative to
//! `{block_prefix}.{l}.` (Hugging Face) and `blk.{l}.` (GGUF).

pub mod gpt2;
pub mod llama;

use super::config::{Arch, ModelConfig};
use super::params::{NormKind, WeightLayout};

/// A named dimension of a tensor's shape (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dim {
    V,
    C,
    T,
    Qkv,
    Kvc,
    F,
}

impl Dim {
    pub fn size(self, cfg: &ModelConfig) -> usize {
        match self {
            Dim::V => cfg.vocab_size,
            Dim::C => cfg.n_embd,
            Dim::T => cfg.block_size,
            Dim::Qkv => cfg.qkv_width(),
            Dim::Kvc => cfg.n_kv_head() * cfg.head_size(),
            Dim::F => cfg.ffn_width(),
        }
    }
}

/// When a tensor is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Always,
    /// `bias`: biases of the norms, the attention output and the feed-forward.
    Bias,
    /// `qkv_bias`: the query/key/value projection's bias.
    QkvBias,
    /// The LM head is not tied to the token embedding.
    Untied,
    /// `lm_head_bias`.
    LmHeadBias,
}

impl When {
    pub fn holds(self, cfg: &ModelConfig) -> bool {
        match self {
            When::Always => true,
            When::Bias => cfg.bias,
            When::QkvBias => cfg.qkv_bias,
            When::Untied => !cfg.tie_embeddings,
            When::LmHeadBias => cfg.lm_head_bias,
        }
    }
}

/// Where a tensor goes in the wiring: one of [`super::params::ParamLayout`]'s
/// fields, or of a block's ([`super::params::BlockParams`]). Several tensors
/// may fill one slot (a Llama's `q`, `k`, `v` are one fused `c_attn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Wte,
    Wpe,
    Ln1,
    CAttn,
    AttnProj,
    Ln2,
    CFc,
    MlpProj,
    LnF,
    LmHead,
}

/// A linear layer's weight (or a norm's gain), or its bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Weight,
    Bias,
}

/// How GGUF (llama.cpp) stores a tensor relative to the Hugging Face layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToGguf {
    Same,
    /// A GPT-2 `Conv1D` weight `(IN, OUT)`, stored `(OUT, IN)`.
    Transpose,
    /// Query rows (`n_head` heads) reordered for llama.cpp's rotary pairs,
    /// in files of architecture `llama` (see [`crate::gguf::family`]).
    RopeQ,
    /// Key rows, likewise (`n_kv_head` heads).
    RopeK,
}

/// One tensor of a family.
#[derive(Debug, Clone, Copy)]
pub struct Tensor {
    /// Hugging Face name (relative to `{block_prefix}.{l}.` in a block).
    pub name: &'static str,
    pub shape: &'static [Dim],
    pub when: When,
    pub slot: Slot,
    pub part: Part,
    /// GGUF name (relative to `blk.{l}.` in a block), if GGUF has the tensor.
    pub gguf: Option<&'static str>,
    pub to_gguf: ToGguf,
}

/// A table row: `row(name, shape, when, slot, part, gguf, to_gguf)`.
const fn row(
    name: &'static str,
    shape: &'static [Dim],
    when: When,
    (slot, part): (Slot, Part),
    gguf: Option<&'static str>,
    to_gguf: ToGguf,
) -> Tensor {
    Tensor {
        name,
        shape,
        when,
        slot,
        part,
        gguf,
        to_gguf,
    }
}

/// Which normalisation a block and the final norm use (its epsilon is the
/// config's, [`ModelConfig::norm_eps`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormRecipe {
    /// `(x - mean) / sqrt(var + eps) * g + b`.
    Layer,
    /// `x / sqrt(mean(x²) + eps) * g`.
    Rms,
}

/// How a token learns where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Positions {
    /// A learned `(T, C)` table added to the token embeddings.
    Learned,
    /// Rotary embeddings turning the query and key heads ([`super::rope`]).
    Rotary,
}

/// The feed-forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mlp {
    /// `c_proj(act(c_fc(h)))`, `act` the config's activation.
    Activated,
    /// `down(silu(gate(h)) * up(h))`, `c_fc = [gate | up]` one product.
    SwiGlu,
}

/// What a block computes, beyond the config's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipe {
    pub norm: NormRecipe,
    pub positions: Positions,
    pub mlp: Mlp,
    /// How the block's linear weights are stored (the LM head is always `(OUT, IN)`).
    pub linear: WeightLayout,
}

/// A model family: its tensors and its block recipe.
#[derive(Debug)]
pub struct Family {
    pub name: &'static str,
    /// Block `l`'s tensors are named `{block_prefix}.{l}.{name}`.
    pub block_prefix: &'static str,
    /// The tensors before the blocks (embeddings).
    pub before: &'static [Tensor],
    /// One block's tensors.
    pub block: &'static [Tensor],
    /// The tensors after the blocks (final norm, LM head).
    pub after: &'static [Tensor],
    /// `None` for a model without blocks (the bigram table).
    pub recipe: Option<Recipe>,
    /// The Hugging Face class has every block and final-norm bias, so the
    /// ones a model lacks (`bias`, `qkv_bias` false) are written as zeros.
    pub zero_absent_biases: bool,
}

/// The course's bigram model: one `(V, V)` table, row `i` the logits after token `i`.
pub const BIGRAM: Family = Family {
    name: "bigram",
    block_prefix: "",
    before: &[row(
        "token_embedding_table.weight",
        &[Dim::V, Dim::V],
        When::Always,
        (Slot::Wte, Part::Weight),
        None,
        ToGguf::Same,
    )],
    block: &[],
    after: &[],
    recipe: None,
    zero_absent_biases: false,
};

/// The family of `arch`.
pub fn of(arch: Arch) -> &'static Family {
    match arch {
        Arch::Bigram => &BIGRAM,
        Arch::Gpt => &gpt2::GPT2,
        Arch::Llama => &llama::LLAMA,
    }
}

impl ModelConfig {
    /// This model's family (see [`super::family`]).
    pub fn family(&self) -> &'static Family {
        of(self.arch)
    }
}

impl Recipe {
    /// The norm with this config's epsilon.
    pub fn norm_kind(&self, cfg: &ModelConfig) -> NormKind {
        let eps = cfg.norm_eps();
        match self.norm {
            NormRecipe::Layer => NormKind::Layer { eps },
            NormRecipe::Rms => NormKind::Rms { eps },
        }
    }
}

impl Tensor {
    /// The shape under `cfg`.
    pub fn dims(&self, cfg: &ModelConfig) -> Vec<usize> {
        self.shape.iter().map(|d| d.size(cfg)).collect()
    }
}

/// A tensor of a family, placed: in block `layer` or outside the blocks.
#[derive(Debug, Clone, Copy)]
pub struct Placed {
    pub tensor: &'static Tensor,
    pub layer: Option<usize>,
}

impl Family {
    /// Every tensor of a model of `n_layer` blocks, in buffer order, whether
    /// or not a config has it (see [`When`]).
    pub fn tensors(&'static self, n_layer: usize) -> impl Iterator<Item = Placed> {
        let outside = |tensors: &'static [Tensor]| {
            tensors.iter().map(|tensor| Placed {
                tensor,
                layer: None,
            })
        };
        let blocks = (0..n_layer).flat_map(move |l| {
            self.block.iter().map(move |tensor| Placed {
                tensor,
                layer: Some(l),
            })
        });
        outside(self.before)
            .chain(blocks)
            .chain(outside(self.after))
    }

    /// The Hugging Face name of a placed tensor.
    pub fn hf_name(&self, p: Placed) -> String {
        match p.layer {
            Some(l) => format!("{}.{l}.{}", self.block_prefix, p.tensor.name),
            None => p.tensor.name.to_string(),
        }
    }

    /// The GGUF name of a placed tensor, if GGUF has it.
    pub fn gguf_name(&self, p: Placed) -> Option<String> {
        let gguf = p.tensor.gguf?;
        Some(match p.layer {
            Some(l) => format!("blk.{l}.{gguf}"),
            None => gguf.to_string(),
        })
    }

    /// The tensor a Hugging Face name stands for (any config's: present or not).
    pub fn find(&'static self, name: &str) -> Option<Placed> {
        if let Some(tensor) = (self.before.iter().chain(self.after)).find(|t| t.name == name) {
            return Some(Placed {
                tensor,
                layer: None,
            });
        }
        let rest = name.strip_prefix(self.block_prefix)?.strip_prefix('.')?;
        let (digits, rest) = rest.split_once('.')?;
        // `1`, never `01`: one name per tensor.
        let layer = digits
            .parse()
            .ok()
            .filter(|l: &usize| l.to_string() == digits)?;
        let tensor = self.block.iter().find(|t| t.name == rest)?;
        Some(Placed {
            tensor,
            layer: Some(layer),
        })
    }

    /// The zero biases written for Hugging Face (see
    /// [`Family::zero_absent_biases`]): name and length. Per block the
    /// query/key/value bias comes first, then the others, the order lmforge
    /// has always written them in (so GGUF exports stay byte for byte).
    pub fn absent_biases(&'static self, cfg: &ModelConfig) -> Vec<(String, usize)> {
        if !self.zero_absent_biases {
            return Vec::new();
        }
        let absent = |p: &Placed, when: When| p.tensor.when == when && !when.holds(cfg);
        let mut names = Vec::new();
        let mut push = |p: Placed| {
            let len = p.tensor.dims(cfg).iter().product();
            names.push((self.hf_name(p), len));
        };
        for l in 0..cfg.n_layer {
            for when in [When::QkvBias, When::Bias] {
                let block = self.block.iter().map(|tensor| Placed {
                    tensor,
                    layer: Some(l),
                });
                block.filter(|p| absent(p, when)).for_each(&mut push);
            }
        }
        self.tensors(0)
            .filter(|p| absent(p, When::Bias))
            .for_each(&mut push);
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{Activation, Norm};

    /// nanoGPT's `bias = False`: every block bias and the final norm's
    /// written as zeros, the q/k/v bias first in each block.
    #[test]
    fn absent_gpt2_biases_are_listed_in_their_order() {
        let cfg = ModelConfig {
            arch: Arch::Gpt,
            vocab_size: 11,
            block_size: 8,
            n_layer: 2,
            n_head: 2,
            n_embd: 4,
            dropout: 0.0,
            norm: Norm::Pre,
            activation: Activation::Gelu,
            tie_embeddings: true,
            bias: false,
            qkv_bias: false,
            lm_head_bias: false,
            llama: None,
            lora: None,
        };
        let absent = cfg.family().absent_biases(&cfg);
        let block_0: Vec<(&str, usize)> =
            absent[..6].iter().map(|(n, l)| (n.as_str(), *l)).collect();
        assert_eq!(
            block_0,
            [
                ("transformer.h.0.attn.c_attn.bias", 12),
                ("transformer.h.0.ln_1.bias", 4),
                ("transformer.h.0.attn.c_proj.bias", 4),
                ("transformer.h.0.ln_2.bias", 4),
                ("transformer.h.0.mlp.c_fc.bias", 16),
                ("transformer.h.0.mlp.c_proj.bias", 4),
            ]
        );
        assert_eq!(absent.len(), 13);
        assert_eq!(absent[12], ("transformer.ln_f.bias".to_string(), 4));
        let llama = ModelConfig {
            arch: Arch::Llama,
            ..cfg
        };
        assert!(llama.family().absent_biases(&llama).is_empty());
    }

    /// Names are unique, and each finds its own tensor again.
    #[test]
    fn every_name_finds_its_tensor() {
        for family in [&BIGRAM, &gpt2::GPT2, &llama::LLAMA] {
            let placed: Vec<Placed> = family.tensors(3).collect();
            let mut names: Vec<String> = placed.iter().map(|p| family.hf_name(*p)).collect();
            let mut gguf: Vec<String> =
                placed.iter().filter_map(|p| family.gguf_name(*p)).collect();
            for (p, name) in placed.iter().zip(&names) {
                let found = family.find(name).unwrap_or_else(|| panic!("{name}"));
                assert_eq!((found.tensor.name, found.layer), (p.tensor.name, p.layer));
            }
            assert!(family.find("transformer.h.01.ln_1.weight").is_none());
            let n = names.len();
            names.sort();
            names.dedup();
            gguf.sort();
            gguf.dedup();
            assert_eq!(names.len(), n, "{}: unique names", family.name);
            let with_gguf = placed.iter().filter(|p| p.tensor.gguf.is_some()).count();
            assert_eq!(gguf.len(), with_gguf, "{}: unique GGUF names", family.name);
        }
    }
}
