//! Hugging Face Llama-family folders (`llama` F32, `qwen2` BF16 sharded,
//! `mistral` F16; made by `tools/make_hf_llama_fixture.py` with
//! `transformers`): imported, their logits and greedy generations are those
//! of `transformers`; imported, exported and imported again they are
//! bit-identical; `--init-from` fine-tunes them.
//!
//! Tolerance: logits within 1e-4 of the logit scale (the largest |logit|),
//! as for GPT-2 (`tests/hf.rs`): lmforge computes in f32, the reference in
//! float64 from the same stored weights. Greedy tokens must be identical.

mod runs;

use lmforge::backend::cpu::Cpu;
use lmforge::model::{Activations, Mode, Model, Window};
use lmforge::sample::{SampleOptions, generate};
use runs::val_losses;
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const FOLDERS: [&str; 3] = ["llama", "qwen2_bf16", "mistral_f16"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf_llama")
        .join(name)
}

/// A tensor of `expected.safetensors` as raw 32-bit words.
fn expected(name: &str) -> Vec<u32> {
    let bytes = std::fs::read(fixture("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    t.data()
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn floats(name: &str) -> Vec<f32> {
    expected(name).into_iter().map(f32::from_bits).collect()
}

fn logits(model: &Model, params: &[f32], ids: &[u32]) -> Vec<f32> {
    let (be, t) = (Cpu::new(), ids.len());
    let mut acts = Activations::training(&be, &model.config, 1, t).unwrap();
    let params = params.to_vec();
    model.forward(
        &be,
        &params,
        &mut acts,
        ids,
        Window::batch(1, t),
        Mode::Eval,
    );
    (0..t).flat_map(|i| acts.logits_row(i).to_vec()).collect()
}

#[test]
fn llama_family_folders_give_the_logits_and_greedy_tokens_of_transformers() {
    let ids = expected("ids");
    for name in FOLDERS {
        let imported = lmforge::hf::read(fixture(name).to_str().unwrap()).unwrap();
        let (model, params) = (&imported.model, &imported.params);
        let want = floats(&format!("logits_{name}"));
        let got = logits(model, params, &ids);
        let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!(scale > 1.0, "{name}: trivial logits ({scale})");
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            worst <= 1e-4 * scale,
            "{name}: max |diff| {worst} (logit scale {scale})"
        );
        let opts = SampleOptions {
            max_new_tokens: 8,
            temperature: 0.0,
            ..SampleOptions::default()
        };
        let greedy = generate(&Cpu::new(), model, params, &ids, &opts, |_| Ok(())).unwrap();
        assert_eq!(
            greedy,
            expected(&format!("greedy_{name}")),
            "{name}: greedy tokens"
        );
    }
    // What each config read as.
    let qwen2 = lmforge::hf::read(fixture("qwen2_bf16").to_str().unwrap()).unwrap();
    assert!(qwen2.model.config.qkv_bias && qwen2.model.config.tie_embeddings);
    let mistral = lmforge::checkpoint::load_config(&fixture("mistral_f16")).unwrap();
    assert_eq!(
        mistral.block_size, 24,
        "the sliding window bounds the context"
    );
}

fn lmforge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lmforge"))
        .args(args)
        .output()
        .expect("lmforge runs")
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn import_export_round_trip_and_fine_tune() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, model_type) in [
        ("llama", "llama"),
        ("qwen2_bf16", "qwen2"),
        ("mistral_f16", "llama"),
    ] {
        let (run, hf) = (
            tmp.path().join(format!("{name}-run")),
            tmp.path().join(format!("{name}-hf")),
        );
        let (run_s, hf_s) = (run.to_str().unwrap(), hf.to_str().unwrap());
        ok(&lmforge(&[
            "import-hf",
            fixture(name).to_str().unwrap(),
            "--out",
            run_s,
        ]));
        ok(&lmforge(&["export-hf", run_s, "--out", hf_s]));
        let original = lmforge::hf::read(fixture(name).to_str().unwrap()).unwrap();
        let back = lmforge::hf::read(hf_s).unwrap();
        assert_eq!(back.model.config, original.model.config, "{name}");
        assert_eq!(
            back.params, original.params,
            "{name}: bit-identical weights"
        );
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(hf.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["model_type"], model_type, "{name}");
    }
    let notes = tmp.path().join("notes.txt");
    std::fs::write(&notes, "some notes of mine, about cats. ".repeat(60)).unwrap();
    let ft = tmp.path().join("ft");
    let out = lmforge(&[
        "train",
        "--init-from",
        fixture("qwen2_bf16").to_str().unwrap(),
        "--data",
        notes.to_str().unwrap(),
        "--max-iters",
        "3",
        "--block",
        "16",
        "--eval-interval",
        "3",
        "--quiet",
        "--out",
        ft.to_str().unwrap(),
    ]);
    ok(&out);
    let (tuned, _) = lmforge::checkpoint::load_model(&ft).unwrap();
    assert!(
        tuned.config.qkv_bias,
        "the fine-tune keeps its parent's model"
    );
}

/// LoRA on an imported Llama: PEFT's files and names, step 0 is the parent,
/// only the adapted parts of the fused layers move, sampling and merging
/// agree, and a resumed run is bit-identical to a straight one. (That PEFT
/// loads the files: `tools/check_lora_peft.py`, by hand.)
#[test]
fn lora_fine_tunes_a_llama_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let notes = dir.join("notes.txt");
    std::fs::write(
        &notes,
        "the cat sat on the mat and the dog lay by the door. ".repeat(80),
    )
    .unwrap();
    let parent = fixture("llama");
    let run = |out: &str, extra: &[&str]| {
        let path = dir.join(out);
        let mut args = vec![
            "train",
            "--init-from",
            parent.to_str().unwrap(),
            "--data",
            notes.to_str().unwrap(),
            "--block",
            "16",
            "--eval-interval",
            "10",
            "--quiet",
            "--out",
            path.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        ok(&lmforge(&args));
        path
    };
    let full = run("full", &["--max-iters", "2"]);
    let lora = run(
        "lora",
        &["--max-iters", "30", "--lora-rank", "4", "--lr", "1e-2"],
    );
    let (start, end) = val_losses(&lora);
    assert_eq!(start, val_losses(&full).0, "step 0 is exactly the parent");
    assert!(end < 0.9 * start, "val loss {start} -> {end}");

    // PEFT's files: its default Llama targets, nn.Linear's layout, its names and shapes.
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lora.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(
        config["target_modules"],
        serde_json::json!(["q_proj", "v_proj"])
    );
    assert_eq!(config["fan_in_fan_out"], false);
    let bytes = std::fs::read(lora.join("adapter_model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.len(), 2 * 2 * 2, "A and B on q and v of both layers");
    let shape = |name: &str| st.tensor(name).unwrap().shape().to_vec();
    let v = "base_model.model.model.layers.1.self_attn.v_proj";
    assert_eq!(shape(&format!("{v}.lora_A.weight")), [4, 32]);
    assert_eq!(
        shape(&format!("{v}.lora_B.weight")),
        [16, 4],
        "2 KV heads of 8"
    );

    // Merged: the query and value rows of the fused c_attn moved, the key rows did not.
    let imported = lmforge::hf::read(parent.to_str().unwrap()).unwrap();
    let (model, adapted) = lmforge::finetune::load_run(&lora).unwrap();
    let tensor =
        |params: &[f32], name: &str| params[model.layout.get(name).unwrap().range.clone()].to_vec();
    for (part, moved) in [("q_proj", true), ("k_proj", false), ("v_proj", true)] {
        let name = format!("model.layers.0.self_attn.{part}.weight");
        let same = tensor(&adapted, &name) == tensor(&imported.params, &name);
        assert_eq!(!same, moved, "{name}");
    }
    let sampled = |run: &Path| {
        let out = lmforge(&[
            "sample",
            run.to_str().unwrap(),
            "--max-new-tokens",
            "12",
            "--seed",
            "3",
        ]);
        ok(&out);
        out.stdout
    };
    let merged = dir.join("merged");
    ok(&lmforge(&[
        "merge-lora",
        lora.to_str().unwrap(),
        "--out",
        merged.to_str().unwrap(),
    ]));
    assert_eq!(sampled(&lora), sampled(&merged));
    assert_eq!(lmforge::finetune::load_run(&merged).unwrap().1, adapted);
    let hf = dir.join("hf");
    ok(&lmforge(&[
        "export-hf",
        lora.to_str().unwrap(),
        "--out",
        hf.to_str().unwrap(),
    ]));
    assert_eq!(
        lmforge::hf::read(hf.to_str().unwrap()).unwrap().params,
        adapted
    );

    // Resumed halfway, every Llama target: bit-identical adapters.
    let all = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj";
    let common = [
        "--lora-rank",
        "4",
        "--lora-targets",
        all,
        "--lr-decay-iters",
        "20",
    ];
    let straight = run("straight", &[&common[..], &["--max-iters", "20"]].concat());
    let resumed = run("resumed", &[&common[..], &["--max-iters", "10"]].concat());
    let resumed_s = resumed.to_str().unwrap();
    ok(&lmforge(&[
        "train",
        "--resume",
        resumed_s,
        "--max-iters",
        "20",
        "--quiet",
    ]));
    let adapters = |run: &Path| std::fs::read(run.join("adapter_model.safetensors")).unwrap();
    assert_eq!(
        adapters(&straight),
        adapters(&resumed),
        "resumed adapters are bit-identical"
    );

    // A GPT-2 target on a Llama is refused by name.
    let out = lmforge(&[
        "train",
        "--init-from",
        parent.to_str().unwrap(),
        "--lora-rank",
        "4",
        "--lora-targets",
        "c_attn",
        "--out",
        dir.join("bad").to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--lora-targets c_attn is not a layer of this Llama-family model"),
        "{err}"
    );
}
