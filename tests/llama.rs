//! `--arch llama` end to end: a Llama-family model (RMS norms, rotary
//! positions, grouped-query attention, SwiGLU) trains from scratch, resumes
//! bit for bit, and samples from its KV cache exactly what full forwards give.

use lmforge::backend::cpu::Cpu;
use lmforge::model::{Activations, Arch, Mode, Window};
use lmforge::sample::{SampleOptions, generate, load_run};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lmforge"))
        .args(args)
        .output()
        .expect("lmforge runs")
}

fn corpus(dir: &Path) -> PathBuf {
    let text: String = (0..2000)
        .map(|i| format!("line {i}: the quick brown fox jumps over the lazy dog.\n"))
        .collect();
    let path = dir.join("corpus.txt");
    std::fs::write(&path, text).unwrap();
    path
}

/// A tiny Llama: 4 query heads over 2 key/value heads, q/k/v biases (Qwen2's), untied.
const TINY_LLAMA: &[&str] = &[
    "--arch",
    "llama",
    "--n-layer",
    "2",
    "--n-head",
    "4",
    "--n-kv-head",
    "2",
    "--n-embd",
    "32",
    "--intermediate-size",
    "48",
    "--rope-theta",
    "500",
    "--qkv-bias",
    "true",
    "--tie-embeddings",
    "false",
    "--block",
    "16",
    "--batch",
    "4",
    "--eval-iters",
    "2",
    "--eval-interval",
    "4",
    "--threads",
    "2",
    "--dropout",
    "0.1",
    "--grad-accum",
    "2",
    "--warmup-iters",
    "2",
    "--lr-decay-iters",
    "12",
    "-q",
];

fn train(data: &Path, out: &Path, iters: &str) -> Output {
    let (data, out) = (data.to_str().unwrap(), out.to_str().unwrap());
    let mut args = vec!["train", "--data", data, "--out", out, "--max-iters", iters];
    args.extend_from_slice(TINY_LLAMA);
    run(&args)
}

fn train_losses(dir: &Path) -> Vec<f64> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["eval"].as_bool() != Some(true))
        .map(|v| v["train_loss"].as_f64().unwrap())
        .collect()
}

#[test]
fn llama_trains_resumes_exactly_and_decodes_from_its_cache() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let (full, split) = (dir.path().join("full"), dir.path().join("split"));
    let out = train(&data, &full, "12");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(train(&data, &split, "5").status.success());
    let resumed = run(&[
        "train",
        "--resume",
        split.to_str().unwrap(),
        "--max-iters",
        "12",
        "-q",
    ]);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let losses = train_losses(&full);
    assert_eq!(losses, train_losses(&split), "resumed losses differ");
    assert!(losses[11] < losses[0] - 0.15, "it learns: {losses:?}");
    let weights = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert_eq!(weights(&full), weights(&split), "identical final weights");

    let (model, params, _) = load_run(&full).unwrap();
    assert_eq!(model.config.arch, Arch::Llama);
    assert!(
        model
            .layout
            .get("model.layers.1.self_attn.k_proj.bias")
            .is_some()
    );
    // Greedy decoding past the context (16), with the cache, against a full
    // forward over the cropped context for every token.
    let be = Cpu::new();
    let opts = SampleOptions {
        max_new_tokens: 24,
        temperature: 0.0,
        ..SampleOptions::default()
    };
    let prompt = [5u32, 9, 2];
    let cached = generate(&be, &model, &params, &prompt, &opts, |_| Ok(())).unwrap();
    let mut tokens = prompt.to_vec();
    let mut acts = Activations::training(&be, &model.config, 1, 16).unwrap();
    for _ in 0..24 {
        let context = &tokens[tokens.len().saturating_sub(16)..];
        let t = context.len();
        model.forward(
            &be,
            &params,
            &mut acts,
            context,
            Window::batch(1, t),
            Mode::Eval,
        );
        let row = acts.logits_row(t - 1);
        let best = (0..row.len())
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap();
        tokens.push(best as u32);
    }
    assert_eq!(
        cached,
        tokens[3..],
        "cached greedy tokens = full-forward greedy tokens"
    );

    let sample = run(&[
        "sample",
        full.to_str().unwrap(),
        "--max-new-tokens",
        "20",
        "--prompt",
        "line",
    ]);
    assert!(
        sample.status.success(),
        "{}",
        String::from_utf8_lossy(&sample.stderr)
    );
    assert!(String::from_utf8_lossy(&sample.stdout).starts_with("line"));
}

/// Llama options without `--arch llama` are refused, naming them; a bad grouping too.
#[test]
fn llama_options_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let out = dir.path().join("r");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let gpt = run(&["train", "--data", d, "--out", o, "--n-kv-head", "2"]);
    assert!(!gpt.status.success());
    assert!(String::from_utf8_lossy(&gpt.stderr).contains("--n-kv-head"));
    let bad = run(&[
        "train",
        "--data",
        d,
        "--out",
        o,
        "--preset",
        "llama-char",
        "--n-kv-head",
        "3",
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("n_head (4) must be a multiple of n_kv_head (3)"),
        "{err}"
    );
}
