//! The Llama family (Llama 2 and 3, Qwen2, Mistral, SmolLM, TinyLlama):
//! Hugging Face's `LlamaForCausalLM` (`Qwen2ForCausalLM` when it has q/k/v
//! biases), whose linear layers are `nn.Linear`, stored `(OUT, IN)`
//! (`KVC = n_kv_head * hs`, `I = intermediate_size`, `F` here).
//!
//! | tensor | shape | GGUF |
//! |---|---|---|
//! | `model.embed_tokens.weight` | `(V, C)` | `token_embd.weight` |
//! | `model.layers.{l}.input_layernorm.weight` | `(C)` (RMS norm gain) | `blk.{l}.attn_norm.weight` |
//! | `model.layers.{l}.self_attn.{q,k,v}_proj.weight` | `(C, C)`, `(KVC, C)`, `(KVC, C)` | `blk.{l}.attn_{q,k,v}.weight`, `llama`: q and k rows permuted |
//! | `model.layers.{l}.self_attn.{q,k,v}_proj.bias` (Qwen2) | `(C)`, `(KVC)`, `(KVC)` | `blk.{l}.attn_{q,k,v}.bias` |
//! | `model.layers.{l}.self_attn.o_proj.weight` | `(C, C)` | `blk.{l}.attn_output.weight` |
//! | `model.layers.{l}.post_attention_layernorm.weight` | `(C)` | `blk.{l}.ffn_norm.weight` |
//! | `model.layers.{l}.mlp.{gate,up}_proj.weight` | `(I, C)` each | `blk.{l}.ffn_{gate,up}.weight` |
//! | `model.layers.{l}.mlp.down_proj.weight` | `(C, I)` | `blk.{l}.ffn_down.weight` |
//! | `model.norm.weight` | `(C)` | `output_norm.weight` |
//! | `lm_head.weight` (untied only) | `(V, C)` | `output.weight` |
//!
//! `q`, `k`, `v` are laid out one after the other (and their biases after
//! them), so together they are one `(C + 2 KVC, C)` matrix: the block runs
//! them as one fused `c_attn` product, as GPT-2's. Likewise `gate` and `up`
//! form one `(2I, C)` product, `c_fc`, whose output SwiGLU splits in two.
//!
//! The block: pre-norm with RMS norms (eps `rms_norm_eps`), rotary
//! positions on the query and key heads, grouped-query attention
//! (`n_kv_head` key/value heads) and `down(silu(gate(h)) * up(h))`.

use super::Dim::{C, F, Kvc, V};
use super::Part::{Bias, Weight};
use super::Slot::*;
use super::ToGguf::{RopeK, RopeQ, Same};
use super::When::{Always, QkvBias, Untied};
use super::{Family, Mlp, NormRecipe, Positions, Recipe, row};
use crate::model::params::WeightLayout;

#[rustfmt::skip]
pub const LLAMA: Family = Family {
    name: "Llama-family",
    block_prefix: "model.layers",
    before: &[
        row("model.embed_tokens.weight", &[V, C], Always, (Wte, Weight), Some("token_embd.weight"), Same),
    ],
    block: &[
        row("input_layernorm.weight", &[C], Always, (Ln1, Weight), Some("attn_norm.weight"), Same),
        row("self_attn.q_proj.weight", &[C, C], Always, (CAttn, Weight), Some("attn_q.weight"), RopeQ),
        row("self_attn.k_proj.weight", &[Kvc, C], Always, (CAttn, Weight), Some("attn_k.weight"), RopeK),
        row("self_attn.v_proj.weight", &[Kvc, C], Always, (CAttn, Weight), Some("attn_v.weight"), Same),
        row("self_attn.q_proj.bias", &[C], QkvBias, (CAttn, Bias), Some("attn_q.bias"), RopeQ),
        row("self_attn.k_proj.bias", &[Kvc], QkvBias, (CAttn, Bias), Some("attn_k.bias"), RopeK),
        row("self_attn.v_proj.bias", &[Kvc], QkvBias, (CAttn, Bias), Some("attn_v.bias"), Same),
        row("self_attn.o_proj.weight", &[C, C], Always, (AttnProj, Weight), Some("attn_output.weight"), Same),
        row("post_attention_layernorm.weight", &[C], Always, (Ln2, Weight), Some("ffn_norm.weight"), Same),
        row("mlp.gate_proj.weight", &[F, C], Always, (CFc, Weight), Some("ffn_gate.weight"), Same),
        row("mlp.up_proj.weight", &[F, C], Always, (CFc, Weight), Some("ffn_up.weight"), Same),
        row("mlp.down_proj.weight", &[C, F], Always, (MlpProj, Weight), Some("ffn_down.weight"), Same),
    ],
    after: &[
        row("model.norm.weight", &[C], Always, (LnF, Weight), Some("output_norm.weight"), Same),
        row("lm_head.weight", &[V, C], Untied, (LmHead, Weight), Some("output.weight"), Same),
    ],
    recipe: Some(Recipe {
        norm: NormRecipe::Rms,
        positions: Positions::Rotary,
        mlp: Mlp::SwiGlu,
        linear: WeightLayout::OutIn,
    }),
    zero_absent_biases: false,
};
