//! Every file lmforge reads that a user can hand it is untrusted: a run's
//! `config.json`, `model.safetensors` and `train_state.safetensors`, a
//! prepared directory's `manifest.json` and shard headers, and a `--config`
//! TOML file (`tokenizer.json` has its own, `tests/tokenizer_untrusted.rs`).
//! Property tests feed randomly damaged copies of real files to the loaders:
//! each must load, or fail with an error naming the file; never panic, never
//! abort, never allocate what a number in the file asks for. A few hundred
//! cases in all, about a second.

use lmforge::checkpoint;
use lmforge::data::shards::{MANIFEST_FILE, Manifest, ShardSet};
use lmforge::train::{Preset, TrainOverrides, config};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The files of a tiny trained run and of a prepared directory, made once.
struct Fixtures {
    _dir: tempfile::TempDir,
    run: PathBuf,
    shards: PathBuf,
}

fn fixtures() -> &'static Fixtures {
    static F: OnceLock<Fixtures> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("corpus.jsonl");
        let lines: String = (0..100)
            .map(|i| format!("{{\"text\": \"document {i}: some words to read\"}}\n"))
            .collect();
        std::fs::write(&data, lines).unwrap();
        let (run, shards) = (dir.path().join("run"), dir.path().join("shards"));
        let lmforge = |args: &[&str]| {
            let out = Command::new(env!("CARGO_BIN_EXE_lmforge"))
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let (d, r, s) = (
            data.to_str().unwrap(),
            run.to_str().unwrap(),
            shards.to_str().unwrap(),
        );
        lmforge(&[
            "prepare",
            d,
            "--tokenizer",
            "char",
            "--out",
            s,
            "--shard-tokens",
            "500",
        ]);
        lmforge(&[
            "train",
            "--data",
            s,
            "--out",
            r,
            "--n-layer",
            "1",
            "--n-head",
            "2",
            "--n-embd",
            "8",
            "--block",
            "8",
            "--batch",
            "2",
            "--max-iters",
            "1",
            "--eval-iters",
            "1",
            "--threads",
            "1",
            "-q",
        ]);
        Fixtures {
            _dir: dir,
            run,
            shards,
        }
    })
}

/// A copy of fixture directory `src` in a new temporary directory.
fn copy_dir(src: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    dir
}

/// Damage to a file's bytes.
#[derive(Debug, Clone)]
enum Damage {
    /// XOR some bytes, within the first `limit` bytes of the file.
    Flip(Vec<(Index, u8)>),
    Truncate(Index),
    /// Overwrite 8 bytes with a little-endian number (a length, a count).
    Number(Index, u64),
}

fn damage() -> impl Strategy<Value = Damage> {
    let number = prop_oneof![
        Just(0u64),
        Just(u64::MAX),
        Just(1 << 40),
        Just(i64::MAX as u64),
        any::<u64>(),
        0..1000u64
    ];
    prop_oneof![
        prop::collection::vec((any::<Index>(), 1..=255u8), 1..8).prop_map(Damage::Flip),
        any::<Index>().prop_map(Damage::Truncate),
        (any::<Index>(), number).prop_map(|(at, n)| Damage::Number(at, n)),
    ]
}

/// Apply `d` to the first `limit` bytes of `bytes` (all of them when larger).
fn apply_damage(bytes: &mut Vec<u8>, d: &Damage, limit: usize) {
    let span = limit.min(bytes.len()).max(1);
    match d {
        Damage::Flip(flips) => flips.iter().for_each(|(at, mask)| {
            let i = at.index(span);
            if let Some(b) = bytes.get_mut(i) {
                *b ^= mask;
            }
        }),
        Damage::Truncate(at) => bytes.truncate(at.index(span + 1)),
        Damage::Number(at, n) => {
            let i = at.index(span);
            let end = (i + 8).min(bytes.len());
            bytes[i..end].copy_from_slice(&n.to_le_bytes()[..end - i]);
        }
    }
}

/// A JSON value a hostile file might hold where a number is expected.
fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(serde_json::json!(u64::MAX)),
        Just(serde_json::json!(1u64 << 40)),
        Just(serde_json::json!(1u64 << 31)),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!(0)),
        Just(serde_json::json!(1e300)),
        Just(serde_json::json!("pre")),
        Just(serde_json::json!([1, 2])),
        (0..100_000u64).prop_map(|n| serde_json::json!(n)),
        any::<bool>().prop_map(Value::Bool),
    ]
}

/// Replace the value of a random key (at any depth) of `json` with `value`,
/// or delete it.
fn replace_random(json: &mut Value, at: Index, value: Value, delete: bool) {
    let mut paths: Vec<Vec<String>> = Vec::new();
    fn walk(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if let Some(obj) = v.as_object() {
            for (k, child) in obj {
                prefix.push(k.clone());
                out.push(prefix.clone());
                walk(child, prefix, out);
                prefix.pop();
            }
        }
    }
    walk(json, &mut Vec::new(), &mut paths);
    if paths.is_empty() {
        return;
    }
    let path = &paths[at.index(paths.len())];
    let mut node = json;
    for key in &path[..path.len() - 1] {
        node = &mut node[key.as_str()];
    }
    let obj = node.as_object_mut().unwrap();
    let key = path.last().unwrap();
    if delete {
        obj.remove(key);
    } else {
        obj.insert(key.clone(), value);
    }
}

/// Ok, or an error whose message names one of `files`.
fn named(result: Result<(), String>, files: &[&str]) -> Result<(), TestCaseError> {
    if let Err(message) = result {
        prop_assert!(
            files.iter().any(|f| message.contains(f)),
            "{message:?} names none of {files:?}"
        );
    }
    Ok(())
}

fn load_run(dir: &Path) -> Result<(), String> {
    let (model, _) = checkpoint::load_model(dir).map_err(|e| e.to_string())?;
    checkpoint::load_tokenizer(dir, &model).map_err(|e| e.to_string())?;
    let n = model.num_params();
    checkpoint::load_train_state(dir, n).map_err(|e| e.to_string())?;
    Ok(())
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut json: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut json);
    std::fs::write(path, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
}

/// The header length of a safetensors file (where the tensors start).
fn header_end(bytes: &[u8]) -> usize {
    8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn damaged_config_json_is_an_error_naming_it(
        at in any::<Index>(), value in json_value(), delete in any::<bool>(),
        bytes in prop::option::weighted(0.3, damage()),
    ) {
        let dir = copy_dir(&fixtures().run);
        let path = dir.path().join("config.json");
        edit_json(&path, |j| replace_random(j, at, value, delete));
        if let Some(d) = &bytes {
            let mut raw = std::fs::read(&path).unwrap();
            apply_damage(&mut raw, d, usize::MAX);
            std::fs::write(&path, raw).unwrap();
        }
        named(load_run(dir.path()), &["config.json", "model.safetensors"])?;
    }

    #[test]
    fn damaged_safetensors_headers_are_errors_naming_the_file(
        d in damage(), state in any::<bool>(), anywhere in prop::bool::weighted(0.2),
    ) {
        let dir = copy_dir(&fixtures().run);
        let name = if state { "train_state.safetensors" } else { "model.safetensors" };
        let path = dir.path().join(name);
        let mut raw = std::fs::read(&path).unwrap();
        let limit = if anywhere { usize::MAX } else { header_end(&raw) };
        apply_damage(&mut raw, &d, limit);
        std::fs::write(&path, raw).unwrap();
        named(load_run(dir.path()), &[name])?;
    }

    #[test]
    fn damaged_shard_headers_and_manifests_are_errors_naming_the_file(
        d in damage(), manifest in any::<bool>(),
        at in any::<Index>(), value in json_value(), delete in any::<bool>(),
    ) {
        let dir = copy_dir(&fixtures().shards);
        let file = if manifest {
            let path = dir.path().join(MANIFEST_FILE);
            edit_json(&path, |j| replace_random(j, at, value, delete));
            MANIFEST_FILE
        } else {
            let path = dir.path().join("train_000000.bin");
            let mut raw = std::fs::read(&path).unwrap();
            apply_damage(&mut raw, &d, lmforge::data::shards::HEADER_BYTES);
            std::fs::write(&path, raw).unwrap();
            "train_000000.bin"
        };
        let opened = ShardSet::open(dir.path()).map_err(|e| e.to_string());
        if let Ok(set) = &opened {
            use lmforge::data::TokenSource;
            let train = set.train();
            let mut window = vec![0u32; train.len().min(16)];
            train.read(0, &mut window);
        }
        named(opened.map(|_| ()), &[file, "manifest.json"])?;
        if manifest {
            let loaded = Manifest::load(&dir.path().join(MANIFEST_FILE));
            named(loaded.map(|_| ()).map_err(|e| e.to_string()), &[MANIFEST_FILE])?;
        }
    }

    #[test]
    fn hostile_toml_configs_are_errors_naming_the_file(
        entries in prop::collection::vec((toml_key(), toml_value()), 1..6),
        d in prop::option::weighted(0.2, damage()),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        let mut text: Vec<u8> = entries
            .iter()
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect::<String>()
            .into_bytes();
        if let Some(d) = &d {
            apply_damage(&mut text, d, usize::MAX);
        }
        std::fs::write(&path, text).unwrap();
        let resolved = config::resolve(Preset::CharCpu, Some(&path), &TrainOverrides::default());
        match resolved {
            Err(e) => named(Err(e.to_string()), &["run.toml"])?,
            Ok(mut cfg) => {
                cfg.model.vocab_size = 65;
                // Estimating never panics, whatever the sizes.
                let _ = lmforge::memory::training(
                    &cfg.model,
                    cfg.batch_size,
                    None,
                    lmforge::backend::cpu::Dtype::Bf16,
                );
            }
        }
    }
}

fn toml_key() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "n_layer",
        "n_head",
        "n_embd",
        "block",
        "batch",
        "lr",
        "eps",
        "dropout",
        "max_iters",
        "grad_accum",
        "beta2",
        "tokenizer",
        "arch",
        "norm",
        "val_fraction",
        "eval_iters",
        "n_layers",
        "seed",
    ])
}

fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("-1".to_string()),
        Just("9223372036854775807".to_string()),
        Just("99999999999999999999".to_string()),
        Just("2147483648".to_string()),
        Just("1e30".to_string()),
        Just("nan".to_string()),
        Just("inf".to_string()),
        Just("\"gpt\"".to_string()),
        Just("\"\"".to_string()),
        Just("[1, 2]".to_string()),
        Just("true".to_string()),
        (1..5000u64).prop_map(|n| n.to_string()),
    ]
}
