//! GPT-2 (and the course's GPT): Hugging Face's `GPT2LMHeadModel`, whose
//! linear layers are `Conv1D`, stored `(IN, OUT)` and applied as
//! `out = x @ W + b`, so a checkpoint is lmforge's buffer under these names
//! with no transposes. GGUF (llama.cpp's `gpt2`) stores them `(OUT, IN)`.
//!
//! | tensor | shape | GGUF | course notebook equivalent |
//! |---|---|---|---|
//! | `transformer.wte.weight` | `(V, C)` | `token_embd.weight` | `token_embedding_table.weight` |
//! | `transformer.wpe.weight` | `(T, C)` | `position_embd.weight` | `position_embedding_table.weight` |
//! | `transformer.h.{l}.ln_1.weight/bias` | `(C)` | `blk.{l}.attn_norm.*` | `blocks[l].ln1` |
//! | `transformer.h.{l}.attn.c_attn.weight/bias` | `(C, 3C)`, `(3C)` | `blk.{l}.attn_qkv.*`, transposed | `[query heads; key heads; value heads]` stacked, transposed |
//! | `transformer.h.{l}.attn.c_proj.weight/bias` | `(C, C)`, `(C)` | `blk.{l}.attn_output.*`, transposed | `blocks[l].sa.proj`, transposed |
//! | `transformer.h.{l}.ln_2.weight/bias` | `(C)` | `blk.{l}.ffn_norm.*` | `blocks[l].ln2` |
//! | `transformer.h.{l}.mlp.c_fc.weight/bias` | `(C, 4C)`, `(4C)` | `blk.{l}.ffn_up.*`, transposed | `blocks[l].ffwd.net[0]`, transposed |
//! | `transformer.h.{l}.mlp.c_proj.weight/bias` | `(4C, C)`, `(C)` | `blk.{l}.ffn_down.*`, transposed | `blocks[l].ffwd.net[2]`, transposed |
//! | `transformer.ln_f.weight/bias` | `(C)` | `output_norm.*` | `ln_f` |
//! | `lm_head.weight` (untied only) | `(V, C)` | `output.weight` | `lm_head.weight` (not transposed) |
//! | `lm_head.bias` (if enabled) | `(V)` | (none) | `lm_head.bias` |
//!
//! The block: layer norms (eps [`LAYER_NORM_EPS`]) before (pre-norm,
//! GPT-2's) or after (post-norm, the course's) each branch, learned
//! positions, and `c_proj(act(c_fc(h)))` with the config's activation (GELU
//! for GPT-2). Biases `bias` and `qkv_bias` turn off (nanoGPT's
//! `bias = False`) are written as zeros, since `GPT2LMHeadModel` has them all.

use super::Dim::{C, F, Qkv, T, V};
use super::Part::{Bias, Weight};
use super::Slot::*;
use super::ToGguf::{Same, Transpose};
use super::When::{Always, Bias as IfBias, LmHeadBias, QkvBias, Untied};
use super::{Family, Mlp, NormRecipe, Positions, Recipe, row};
use crate::model::params::WeightLayout;

/// Added to the variance in every layer norm (GPT-2's `layer_norm_epsilon`).
pub const LAYER_NORM_EPS: f32 = 1e-5;

#[rustfmt::skip]
pub const GPT2: Family = Family {
    name: "GPT-2",
    block_prefix: "transformer.h",
    before: &[
        row("transformer.wte.weight", &[V, C], Always, (Wte, Weight), Some("token_embd.weight"), Same),
        row("transformer.wpe.weight", &[T, C], Always, (Wpe, Weight), Some("position_embd.weight"), Same),
    ],
    block: &[
        row("ln_1.weight", &[C], Always, (Ln1, Weight), Some("attn_norm.weight"), Same),
        row("ln_1.bias", &[C], IfBias, (Ln1, Bias), Some("attn_norm.bias"), Same),
        row("attn.c_attn.weight", &[C, Qkv], Always, (CAttn, Weight), Some("attn_qkv.weight"), Transpose),
        row("attn.c_attn.bias", &[Qkv], QkvBias, (CAttn, Bias), Some("attn_qkv.bias"), Same),
        row("attn.c_proj.weight", &[C, C], Always, (AttnProj, Weight), Some("attn_output.weight"), Transpose),
        row("attn.c_proj.bias", &[C], IfBias, (AttnProj, Bias), Some("attn_output.bias"), Same),
        row("ln_2.weight", &[C], Always, (Ln2, Weight), Some("ffn_norm.weight"), Same),
        row("ln_2.bias", &[C], IfBias, (Ln2, Bias), Some("ffn_norm.bias"), Same),
        row("mlp.c_fc.weight", &[C, F], Always, (CFc, Weight), Some("ffn_up.weight"), Transpose),
        row("mlp.c_fc.bias", &[F], IfBias, (CFc, Bias), Some("ffn_up.bias"), Same),
        row("mlp.c_proj.weight", &[F, C], Always, (MlpProj, Weight), Some("ffn_down.weight"), Transpose),
        row("mlp.c_proj.bias", &[C], IfBias, (MlpProj, Bias), Some("ffn_down.bias"), Same),
    ],
    after: &[
        row("transformer.ln_f.weight", &[C], Always, (LnF, Weight), Some("output_norm.weight"), Same),
        row("transformer.ln_f.bias", &[C], IfBias, (LnF, Bias), Some("output_norm.bias"), Same),
        row("lm_head.weight", &[V, C], Untied, (LmHead, Weight), Some("output.weight"), Same),
        row("lm_head.bias", &[V], LmHeadBias, (LmHead, Bias), None, Same),
    ],
    recipe: Some(Recipe {
        norm: NormRecipe::Layer,
        positions: Positions::Learned,
        mlp: Mlp::Activated,
        linear: WeightLayout::InOut,
    }),
    zero_absent_biases: true,
};
