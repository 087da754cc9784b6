//! Tiny runs the chat and serve tests talk to, made here: a character-level
//! base model trained for a few steps, random GPTs with GPT-2's vocabulary
//! plus the chat template's special tokens, and one with ChatML's tokens and
//! Qwen2's `chat_template` in its `tokenizer_config.json`.
//!
//! Also the metrics helper the fine-tuning tests read losses with, and the
//! run-and-check helpers of the hardening tests.
//!
//! Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use lmforge::chat::SPECIAL_TOKENS;
use lmforge::model::{Activation, Arch, Model, ModelConfig, Norm};
use lmforge::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn lmforge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lmforge"))
}

/// `lmforge ARGS`, run to the end.
pub fn run(args: &[&str]) -> Output {
    lmforge().args(args).output().expect("lmforge runs")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Fails with a message containing every one of `parts`.
pub fn assert_fails(out: &Output, parts: &[&str]) -> String {
    let err = stderr(out);
    assert!(!out.status.success(), "succeeded: {err}");
    for part in parts {
        assert!(err.contains(part), "{err:?} lacks {part:?}");
    }
    err
}

pub fn assert_ok(out: &Output) -> String {
    let err = stderr(out);
    assert!(out.status.success(), "{err}");
    err
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
    model_run(dir, name, shape, seed, bias, &SPECIAL_TOKENS)
}

/// Qwen2-Instruct's chat template (ChatML).
pub const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// A random model with GPT-2's tokenizer plus `<|im_start|>` (50257) and
/// `<|im_end|>` (50258), and [`CHATML`] as its `chat_template`.
pub fn chatml_run(dir: &Path, name: &str, shape: Shape, bias: &[(usize, f32)]) -> PathBuf {
    let out = model_run(dir, name, shape, 7, bias, &["<|im_start|>", "<|im_end|>"]);
    let config = serde_json::json!({"chat_template": CHATML, "eos_token": "<|im_end|>"});
    std::fs::write(out.join("tokenizer_config.json"), config.to_string()).unwrap();
    out
}

/// A random model in `dir/name`: GPT-2's tokenizer with `specials`, weights
/// from `seed`, then head bias `bias` on the given ids.
fn model_run(
    dir: &Path,
    name: &str,
    shape: Shape,
    seed: u64,
    bias: &[(usize, f32)],
    specials: &[&str],
) -> PathBuf {
    let out = dir.join(name);
    std::fs::create_dir_all(&out).unwrap();
    let tok = lmforge::tokenizer::gpt2()
        .unwrap()
        .with_added_specials(specials)
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

/// `(val loss at step 0, val loss at the end)` from a run's metrics.
pub fn val_losses(run: &Path) -> (f64, f64) {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let evals: Vec<f64> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["eval"] == true)
        .map(|v| v["val_loss"].as_f64().unwrap())
        .collect();
    (evals[0], *evals.last().unwrap())
}
