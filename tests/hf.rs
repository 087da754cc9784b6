//! Hugging Face GPT-2 folders: import (single and sharded, F32 and F16,
//! tokenizer.json or vocab.json + merges.txt), the logits `transformers`
//! computes for them (fixtures by `tools/make_hf_fixture.py`), the local
//! cache lookup, export, and the errors for folders lmforge cannot read.

use lmforge::backend::cpu::Cpu;
use lmforge::model::{Activations, Mode, Model, Window};
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf_gpt2")
        .join(name)
}

fn expected(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(fixture("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn ids() -> Vec<u32> {
    expected("ids").iter().map(|x| x.to_bits()).collect()
}

/// lmforge's logits for every position of `ids`.
fn logits(model: &Model, params: &[f32], ids: &[u32]) -> Vec<f32> {
    let be = Cpu::new();
    let t = ids.len();
    let mut acts = Activations::training(&be, &model.config, 1, t).unwrap();
    model.forward(
        &be,
        &params.to_vec(),
        &mut acts,
        ids,
        Window::batch(1, t),
        Mode::Eval,
    );
    (0..t).flat_map(|i| acts.logits_row(i).to_vec()).collect()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    assert!(
        scale > 1.0,
        "{what}: the fixture's logits are not trivial ({scale})"
    );
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= 1e-4 * scale,
        "{what}: max |diff| {worst} (logit scale {scale})"
    );
}

#[test]
fn imported_folders_give_the_logits_of_transformers() {
    let single = lmforge::hf::read(fixture("single").to_str().unwrap()).unwrap();
    assert_eq!(single.model.config.n_layer, 2);
    assert_close(
        &logits(&single.model, &single.params, &ids()),
        &expected("logits_f32"),
        "F32",
    );
    let sharded = lmforge::hf::read(fixture("sharded_f16").to_str().unwrap()).unwrap();
    assert_close(
        &logits(&sharded.model, &sharded.params, &ids()),
        &expected("logits_f16"),
        "F16 shards",
    );
    // vocab.json + merges.txt encode as tokenizer.json does.
    let text = "Hello world, this is a tiny tokenizer test.\n<|endoftext|> again";
    assert_eq!(
        sharded.tokenizer.encode(text).unwrap(),
        single.tokenizer.encode(text).unwrap()
    );
}

fn lmforge(args: &[&str], env: &[(&str, &Path)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lmforge"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// `import-hf NAME` finds the model in a Hugging Face cache laid out as
/// `huggingface_hub` leaves it, and `export-hf` writes it back loadable:
/// the same weights, config and tokenizer.
#[test]
fn import_from_the_cache_and_export_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("hub/models--openai-community--tiny-gpt2");
    copy_dir(&fixture("single"), &repo.join("snapshots/0123abc"));
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abc").unwrap();
    let hub = tmp.path().join("hub");
    let run = tmp.path().join("run");
    let out = lmforge(
        &[
            "import-hf",
            "openai-community/tiny-gpt2",
            "--out",
            run.to_str().unwrap(),
        ],
        &[("HF_HUB_CACHE", &hub)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("2 layers x 32 dims"),
        "{}",
        stderr(&out)
    );
    // --init-from finds the same name in the cache, without import.
    std::fs::write(
        tmp.path().join("notes.txt"),
        "some notes of mine, about cats. ".repeat(60),
    )
    .unwrap();
    let ft = tmp.path().join("ft");
    let out = lmforge(
        &[
            "train",
            "--init-from",
            "tiny-gpt2",
            "--data",
            tmp.path().join("notes.txt").to_str().unwrap(),
            "--max-iters",
            "3",
            "--block",
            "16",
            "--eval-interval",
            "3",
            "--quiet",
            "--out",
            ft.to_str().unwrap(),
        ],
        &[("HF_HUB_CACHE", &hub)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(ft.join("model.safetensors").exists());
    let missing = lmforge(
        &[
            "import-hf",
            "gpt2-never-downloaded",
            "--out",
            tmp.path().join("missing").to_str().unwrap(),
        ],
        &[("HF_HUB_CACHE", &hub)],
    );
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("lmforge never downloads"),
        "{}",
        stderr(&missing)
    );

    let hf = tmp.path().join("hf");
    let out = lmforge(
        &[
            "export-hf",
            run.to_str().unwrap(),
            "--out",
            hf.to_str().unwrap(),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for file in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert!(hf.join(file).exists(), "{file} exported");
    }
    let original = lmforge::hf::read(fixture("single").to_str().unwrap()).unwrap();
    let back = lmforge::hf::read(hf.to_str().unwrap()).unwrap();
    assert_eq!(back.model.config, original.model.config);
    assert_eq!(back.params, original.params, "bit-identical weights");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(hf.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["model_type"], "gpt2");
    assert_eq!(config["architectures"][0], "GPT2LMHeadModel");
}

#[test]
fn folders_lmforge_cannot_read_say_why() {
    let tmp = tempfile::tempdir().unwrap();
    let pickle = tmp.path().join("pickle");
    std::fs::create_dir_all(&pickle).unwrap();
    std::fs::copy(fixture("single/config.json"), pickle.join("config.json")).unwrap();
    std::fs::write(pickle.join("pytorch_model.bin"), b"not read").unwrap();
    let err = lmforge::hf::read(pickle.to_str().unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("pytorch_model.bin") && err.contains("safe_serialization=True"),
        "{err}"
    );

    let gemma = tmp.path().join("gemma");
    copy_dir(&fixture("single"), &gemma);
    std::fs::write(
        gemma.join("config.json"),
        r#"{"model_type": "gemma", "hidden_size": 64}"#,
    )
    .unwrap();
    let err = lmforge::hf::read(gemma.to_str().unwrap())
        .err()
        .unwrap()
        .to_string();
    let names = ["gpt2", "llama", "qwen2", "mistral"];
    assert!(
        err.contains("\"gemma\"") && names.iter().all(|n| err.contains(n)),
        "{err}"
    );

    let bigger = tmp.path().join("bigger");
    copy_dir(&fixture("single"), &bigger);
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bigger.join("config.json")).unwrap()).unwrap();
    config["n_layer"] = 1.into();
    std::fs::write(bigger.join("config.json"), config.to_string()).unwrap();
    let err = lmforge::hf::read(bigger.to_str().unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("transformer.h.1"),
        "an extra layer is not ignored: {err}"
    );
}
