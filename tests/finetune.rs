//! Fine-tuning end to end, through the command line: a small pretrained
//! run learns a new text (full, LoRA, frozen layers), resumes exactly, and
//! refuses what would silently break it; conversations (SFT) train on the
//! replies only.

mod runs;

use lmforge::backend::IGNORE_TARGET;
use lmforge::backend::cpu::Cpu;
use lmforge::model::{
    Activation, Activations, Arch, Grads, Mode, Model, ModelConfig, Norm, Window,
};
use runs::val_losses;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn lmforge(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lmforge"));
    cmd.current_dir(dir).args(args);
    if args[0] == "train" {
        cmd.arg("--quiet");
    }
    cmd.output().unwrap()
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A base model trained briefly on the demo corpus, and a new text it has not seen.
fn base(dir: &Path) {
    ok(lmforge(
        dir,
        &[
            "train",
            "--max-iters",
            "200",
            "--n-layer",
            "2",
            "--n-embd",
            "32",
            "--n-head",
            "2",
            "--block",
            "32",
            "--lr",
            "1e-2",
            "--eval-interval",
            "200",
            "--out",
            "base",
        ],
    ));
    let new = "the cat sat on the mat and the dog lay by the door. ".repeat(120);
    std::fs::write(dir.join("new.txt"), new).unwrap();
}

fn finetune(dir: &Path, out: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--init-from",
        "base",
        "--data",
        "new.txt",
        "--block",
        "32",
        "--max-iters",
        "60",
        "--eval-interval",
        "20",
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    lmforge(dir, &args)
}

#[test]
fn a_pretrained_run_learns_a_new_text_full_lora_and_frozen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    base(dir);
    for (run, extra) in [
        ("full", vec!["--lr", "3e-3"]),
        ("lora", vec!["--lora-rank", "8", "--lr", "1e-2"]),
        ("frozen", vec!["--freeze-layers", "1", "--lr", "1e-2"]),
    ] {
        ok(finetune(dir, run, &extra));
        let (start, end) = val_losses(&dir.join(run));
        assert!(end < 0.75 * start, "{run}: val loss {start} -> {end}");
    }
    // The run records its parent and the hash of the parent's weights.
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("lora/train_config.json")).unwrap())
            .unwrap();
    let parent = &config["config"]["finetune"]["init_from"];
    assert_eq!(parent["name"], "base");
    assert_eq!(parent["weights_sha256"].as_str().unwrap().len(), 64);
    // LoRA saves its adapters only; the frozen run kept the parent's embeddings.
    assert!(dir.join("lora/adapter_model.safetensors").exists());
    assert!(!dir.join("lora/model.safetensors").exists());
    let (base_model, base_params) = lmforge::finetune::load_run(&dir.join("base")).unwrap();
    let (_, frozen_params) = lmforge::finetune::load_run(&dir.join("frozen")).unwrap();
    let wte = base_model.layout.wte.clone();
    assert_eq!(
        frozen_params[wte.clone()],
        base_params[wte],
        "frozen embeddings unchanged"
    );
    let last = base_model.layout.blocks[1].c_fc.weight.clone();
    assert_ne!(
        frozen_params[last.clone()],
        base_params[last],
        "the last block trained"
    );
    // A LoRA run samples (its adapters merged onto the parent), and
    // merge-lora writes the same merged weights as an ordinary run.
    let sampled = |run: &str| {
        let out = ok(lmforge(
            dir,
            &["sample", run, "--max-new-tokens", "20", "--seed", "5"],
        ));
        String::from_utf8(out.stdout).unwrap()
    };
    ok(lmforge(dir, &["merge-lora", "lora", "--out", "merged"]));
    assert!(dir.join("merged/model.safetensors").exists());
    assert_eq!(sampled("lora"), sampled("merged"));
    let (_, merged) = lmforge::finetune::load_run(&dir.join("merged")).unwrap();
    let (_, adapted) = lmforge::finetune::load_run(&dir.join("lora")).unwrap();
    assert_eq!(merged, adapted);
    assert_ne!(merged, base_params, "the adapters changed the weights");
}

#[test]
fn fine_tunes_resume_exactly_and_refuse_contradictions() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    base(dir);
    ok(finetune(dir, "straight", &["--lora-rank", "4"]));
    ok(lmforge(
        dir,
        &[
            "train",
            "--init-from",
            "base",
            "--data",
            "new.txt",
            "--block",
            "32",
            "--max-iters",
            "30",
            "--eval-interval",
            "20",
            "--lora-rank",
            "4",
            "--lr",
            "2e-4",
            "--lr-decay-iters",
            "60",
            "--out",
            "resumed",
        ],
    ));
    ok(lmforge(
        dir,
        &["train", "--resume", "resumed", "--max-iters", "60"],
    ));
    let bytes = |run: &str| std::fs::read(dir.join(run).join("adapter_model.safetensors")).unwrap();
    assert_eq!(
        bytes("straight"),
        bytes("resumed"),
        "resumed adapters are bit-identical"
    );

    let err = stderr(&finetune(dir, "x", &["--tokenizer", "gpt2"]));
    assert!(
        err.contains("--tokenizer cannot be used with --init-from"),
        "{err}"
    );
    let err = stderr(&finetune(dir, "x", &["--n-embd", "64"]));
    assert!(err.contains("--n-embd"), "{err}");
    let err = stderr(&finetune(dir, "x", &["--freeze-layers", "2"]));
    assert!(err.contains("freezes every block"), "{err}");
    // The parent changed under a LoRA run: loading it says so.
    ok(lmforge(
        dir,
        &["train", "--resume", "base", "--max-iters", "210"],
    ));
    let err = stderr(&lmforge(
        dir,
        &["sample", "straight", "--max-new-tokens", "5"],
    ));
    assert!(err.contains("weights changed"), "{err}");
}

fn tiny_gpt2_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf_gpt2/single")
}

#[test]
fn conversations_grow_the_vocabulary_and_train_on_replies() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let lines: Vec<String> = (0..40)
        .map(|i| {
            format!(
                r#"{{"prompt": "What is {i} plus one?", "response": "It is {}."}}"#,
                i + 1
            )
        })
        .collect();
    std::fs::write(dir.join("chats.jsonl"), lines.join("\n")).unwrap();
    let fixture = tiny_gpt2_fixture();
    let args = |out: &str, file: &str| -> Vec<String> {
        [
            "train",
            "--init-from",
            fixture.to_str().unwrap(),
            "--sft",
            file,
            "--max-iters",
            "40",
            "--eval-interval",
            "20",
            "--lr",
            "3e-3",
            "--block",
            "16",
            "--out",
            out,
        ]
        .map(String::from)
        .to_vec()
    };
    let run = |out: &str, file: &str| {
        let a = args(out, file);
        lmforge(dir, &a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    ok(run("sft", "chats.jsonl"));
    let (start, end) = val_losses(&dir.join("sft"));
    assert!(end < 0.8 * start, "val loss {start} -> {end}");
    let tok = lmforge::tokenizer::load(&dir.join("sft/tokenizer.json")).unwrap();
    assert_eq!(tok.vocab_size(), 404, "four chat tokens added to the 400");
    assert!(lmforge::chat::template::ChatTemplate::from_tokenizer(tok.as_ref()).is_some());
    let (model, _) = lmforge::finetune::load_run(&dir.join("sft")).unwrap();
    assert_eq!(
        model.config.vocab_size, 404,
        "the embedding grew with the vocabulary"
    );

    std::fs::write(
        dir.join("bad.jsonl"),
        format!("{}\n{}\n{{\"prompt\": 3}}\n", lines[0], lines[1]),
    )
    .unwrap();
    let err = stderr(&run("bad", "bad.jsonl"));
    assert!(err.contains("bad.jsonl: line 3"), "{err}");
}

/// A masked target (`IGNORE_TARGET`) sends no gradient into the logits,
/// and the loss is the mean over the counted targets only.
#[test]
fn masked_targets_get_no_gradient() {
    let cfg = ModelConfig {
        arch: Arch::Gpt,
        vocab_size: 13,
        block_size: 6,
        n_layer: 1,
        n_head: 2,
        n_embd: 8,
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
    let (be, model) = (Cpu::new(), Model::new(cfg).unwrap());
    let params = model.init_params(3);
    let inputs = [1u32, 5, 2, 7, 3, 9];
    let window = Window::batch(1, 6);
    let run = |targets: &[u32]| {
        let mut acts = Activations::training(&be, &model.config, 1, 6).unwrap();
        let mut grads = Grads::new(&be, 0, model.num_params()).unwrap();
        model.forward(&be, &params, &mut acts, &inputs, window, Mode::Eval);
        let loss = model.backward(
            &be,
            &params,
            &mut grads,
            &mut acts,
            targets,
            window,
            Mode::Eval,
            1.0,
        );
        let rows: Vec<Vec<f32>> = (0..6)
            .map(|i| acts.tensors.logits.at(0, i..i + 1).to_vec())
            .collect();
        let losses = acts.tensors.losses.at(0, 0..6).to_vec();
        (loss, rows, losses, grads.buf)
    };
    let m = IGNORE_TARGET;
    let (loss, dlogits, _, grads) = run(&[m, m, 4, 8, m, 2]);
    for (i, row) in dlogits.iter().enumerate() {
        let zero = row.iter().all(|&g| g == 0.0);
        assert_eq!(zero, [0, 1, 4].contains(&i), "row {i}: {row:?}");
    }
    let (_, _, all_losses, all_grads) = run(&[0, 11, 4, 8, 6, 2]);
    let counted = (all_losses[2] + all_losses[3] + all_losses[5]) / 3.0;
    assert!((loss - counted).abs() < 1e-5, "{loss} vs {counted}");
    assert_ne!(
        grads, all_grads,
        "the masked positions would have had gradients"
    );
}
