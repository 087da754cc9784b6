//! Tiny runs the chat and serve tests talk to, made here: a character-level
//! base model trained for a few steps, and random GPTs with GPT-2's
//! vocabulary plus the chat template's special tokens.
//!
//! Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use lmforge::chat::SPECIAL_TOKENS;
use lmforge::model::{Activation, Arch, Model, ModelConfig, Norm};
use lmforge::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn lmforge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lmforge"))
}

/// A character-level base model (block 64), trained on the built-in text for 30 steps.
pub fn char_run(dir: &Path) -> PathBuf {
    let out = dir.join("char");
    let status = lmforge()
        .args([
            "train",
            "--max-iters",
            "30",
            "--n-layer",
            "1",
            "--n-embd",
            "32",
        ])
        .args([
            "--n-head",
            "2",
            "--block",
            "64",
            "--threads",
            "2",
            "-q",
            "--out",
        ])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    out
}

/// The size of a random chat model.
pub struct Shape {
    pub block_size: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
}

/// A random chat model in `dir/name`: GPT-2's tokenizer with the template's
/// specials, weights from `seed`, then head bias `bias` on the given ids.
pub fn chat_model_run(
    dir: &Path,
    name: &str,
    shape: Shape,
    seed: u64,
    bias: &[(usize, f32)],
) -> PathBuf {
    let out = dir.join(name);
    std::fs::create_dir_all(&out).unwrap();
    let tok = lmforge::tokenizer::gpt2()
        .unwrap()
        .with_added_specials(&SPECIAL_TOKENS)
        .unwrap();
    let model = Model::new(ModelConfig {
        arch: Arch::Gpt,
        vocab_size: tok.vocab_size(),
        block_size: shape.block_size,
        n_layer: shape.n_layer,
        n_head: shape.n_head,
        n_embd: shape.n_embd,
        dropout: 0.0,
        norm: Norm::Pre,
        activation: Activation::Gelu,
        tie_embeddings: true,
        bias: true,
        qkv_bias: true,
        lm_head_bias: true,
        llama: None,
        lora: None,
    })
    .unwrap();
    let mut params = model.init_params(seed);
    let head = model.layout.get("lm_head.bias").unwrap().range.clone();
    for &(id, b) in bias {
        params[head.start + id] = b;
    }
    lmforge::checkpoint::save_model(&out, &model, &params, tok.eot_token()).unwrap();
    tok.save(&out.join("tokenizer.json")).unwrap();
    out
}
