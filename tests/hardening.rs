//! Nothing lost, nothing silent: each case of issue 15, reproduced with the
//! real binary. Before the fix each of these lost work, aborted, or ended
//! with exit code 0 on a wrong result.

mod runs;

use runs::{assert_fails, assert_ok, run};

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;

fn text(i: usize) -> String {
    format!("line {i}: the quick brown fox jumps over the lazy dog.\n")
}

/// A small generated corpus.
fn corpus(dir: &Path) -> PathBuf {
    let path = dir.join("corpus.txt");
    std::fs::write(&path, (0..400).map(text).collect::<String>()).unwrap();
    path
}

const TINY: &[&str] = &[
    "--n-layer",
    "1",
    "--n-head",
    "2",
    "--n-embd",
    "16",
    "--block",
    "8",
    "--batch",
    "2",
    "--eval-iters",
    "1",
    "--eval-interval",
    "100",
    "--threads",
    "1",
    "-q",
];

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `train` with the tiny settings, of which `extra` may replace some (a
/// flag may be given only once).
fn train(data: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train", "--data", s(data), "--out", s(out)];
    let mut i = 0;
    while i < TINY.len() {
        let pair = TINY[i].starts_with("--");
        if !extra.contains(&TINY[i]) {
            args.extend_from_slice(&TINY[i..i + 1 + pair as usize]);
        }
        i += 1 + pair as usize;
    }
    args.extend_from_slice(extra);
    run(&args)
}

/// The weights of `model.safetensors` (or `train_state`'s `params`), by name.
fn tensors(path: &Path) -> HashMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, t)| {
            let values = t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            (name, values)
        })
        .collect()
}

/// Rewrite `model.safetensors` with `edit` applied to every tensor, as a
/// file of an earlier version would be (no checksum).
fn rewrite_model(run_dir: &Path, edit: impl Fn(&str, &mut [f32])) {
    let path = run_dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut data: Vec<(String, Vec<u8>, Vec<usize>)> = Vec::new();
    for (name, t) in st.tensors() {
        let mut values: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        edit(&name, &mut values);
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        data.push((name, raw, t.shape().to_vec()));
    }
    let views: Vec<(String, TensorView)> = data
        .iter()
        .map(|(n, b, s)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    std::fs::write(&path, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
}

fn sample(run_dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["sample", s(run_dir), "--max-new-tokens", "20"];
    args.extend_from_slice(extra);
    run(&args)
}

/// Case 1: a second `train --out` onto a run is refused; --overwrite replaces it.
#[test]
fn an_existing_run_is_never_overwritten_silently() {
    let dir = tempfile::tempdir().unwrap();
    let (data, out) = (corpus(dir.path()), dir.path().join("r"));
    assert_ok(&train(&data, &out, &["--max-iters", "3"]));
    let model = std::fs::read(out.join("model.safetensors")).unwrap();
    let metrics = std::fs::read(out.join("metrics.jsonl")).unwrap();
    let again = train(&data, &out, &["--max-iters", "2", "--n-embd", "8"]);
    assert_fails(
        &again,
        &["already holds a training run", "--resume", "--overwrite"],
    );
    assert_eq!(std::fs::read(out.join("model.safetensors")).unwrap(), model);
    assert_eq!(std::fs::read(out.join("metrics.jsonl")).unwrap(), metrics);
    let replaced = train(
        &data,
        &out,
        &["--max-iters", "2", "--n-embd", "8", "--overwrite"],
    );
    assert_ok(&replaced);
    assert_ne!(std::fs::read(out.join("model.safetensors")).unwrap(), model);
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(
        !lines.contains("\"step\":3"),
        "the old metrics are gone: {lines}"
    );
}

/// Case 2: a run that diverges stops at the step, exits non-zero and never
/// writes NaN; `--on-nan skip` drops such steps and gives up after ten in a row.
#[test]
fn a_diverging_run_stops_and_keeps_finite_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let (data, out) = (corpus(dir.path()), dir.path().join("r"));
    let args = ["--max-iters", "30", "--lr", "1e30", "--warmup-iters", "0"];
    let ckpt = ["--checkpoint-interval", "1"];
    let result = train(&data, &out, &[&args[..], &ckpt[..]].concat());
    let err = assert_fails(
        &result,
        &["training stopped without saving", "--on-nan skip"],
    );
    assert!(
        err.contains("the loss is") || err.contains("gradient norm is"),
        "{err}"
    );
    assert!(!err.contains("sample with"), "{err}");
    for file in ["model.safetensors", "train_state.safetensors"] {
        if out.join(file).exists() {
            for (name, values) in tensors(&out.join(file)) {
                assert!(values.iter().all(|v| v.is_finite()), "{file}: {name}");
            }
        }
    }
    let skip = train(
        &data,
        &dir.path().join("s"),
        &[&args[..], &["--on-nan", "skip"]].concat(),
    );
    assert_fails(&skip, &["11 steps in a row"]);
    let log = std::fs::read_to_string(dir.path().join("s/metrics.jsonl")).unwrap();
    assert!(log.contains("\"skipped\":true"), "{log}");
}

/// Case 2: sampling refuses a model with non-finite weights, or whose
/// logits overflow.
#[test]
fn sampling_refuses_non_finite_models() {
    let dir = tempfile::tempdir().unwrap();
    let (data, out) = (corpus(dir.path()), dir.path().join("r"));
    assert_ok(&train(&data, &out, &["--max-iters", "2"]));
    // Finite weights whose logits overflow: embeddings of 1e10 (layer norms
    // still see finite variances), a final layer-norm gain of 1e30.
    rewrite_model(&out, |name, v| match name {
        "transformer.wte.weight" => v.iter_mut().for_each(|x| *x *= 1e10),
        "transformer.ln_f.weight" => v.iter_mut().for_each(|x| *x = 1e30),
        _ => {}
    });
    let huge = sample(&out, &["--prompt", "line"]);
    assert_fails(&huge, &["logits hold"]);
    rewrite_model(&out, |_, v| v[0] = f32::NAN);
    let nan = sample(&out, &["--prompt", "line"]);
    assert_fails(&nan, &["model.safetensors", "holds NaN at index 0"]);
    assert!(nan.stdout.is_empty(), "nothing printed");
}

/// Case 3: configurations too big for any machine are errors, not aborts.
#[test]
fn configs_too_big_for_the_machine_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (data, out) = (corpus(dir.path()), dir.path().join("r"));
    let block = train(&data, &out, &["--block", "100000000"]);
    assert_fails(
        &block,
        &["needs about", "is available", "--ignore-memory-check"],
    );
    let wide = train(&data, &out, &["--n-embd", "2147483648", "--n-head", "1"]);
    assert_fails(&wide, &["overflows a 64-bit count"]);
    let deep = run(&[
        "train",
        "--n-layer",
        "64",
        "--n-embd",
        "16384",
        "--out",
        s(&out),
        "-q",
    ]);
    assert_fails(
        &deep,
        &["needs about", "TB of memory", "--ignore-memory-check"],
    );
    assert!(!out.exists(), "nothing written");
}

/// Case 4: a symbolic link back to a parent is not followed.
#[cfg(unix)]
#[test]
fn symlink_loops_are_read_once() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir_all(docs.join("sub")).unwrap();
    std::fs::write(docs.join("a.txt"), (0..200).map(text).collect::<String>()).unwrap();
    std::os::unix::fs::symlink("..", docs.join("sub/up")).unwrap();
    std::os::unix::fs::symlink("a.txt", docs.join("same.txt")).unwrap();
    let files = lmforge::data::documents::expand_inputs(&[&docs], None).unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    let prepared = dir.path().join("p");
    let out = run(&[
        "prepare",
        s(&docs),
        "--tokenizer",
        "char",
        "--out",
        s(&prepared),
    ]);
    let err = assert_ok(&out);
    assert!(err.contains("warning") && err.contains("again"), "{err}");
    let result = train(&docs, &dir.path().join("r"), &["--max-iters", "1"]);
    assert_ok(&result);
}

/// Case 5: an input that changed after `prepare` is not counted twice.
#[test]
fn a_changed_input_is_an_error_not_a_second_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (data, out) = (corpus(dir.path()), dir.path().join("p"));
    let prepare = || run(&["prepare", s(&data), "--tokenizer", "char", "--out", s(&out)]);
    assert_ok(&prepare());
    let manifest = std::fs::read(out.join("manifest.json")).unwrap();
    std::fs::write(&data, (0..500).map(text).collect::<String>()).unwrap();
    assert_fails(&prepare(), &["changed since it was prepared", "--out"]);
    assert_eq!(std::fs::read(out.join("manifest.json")).unwrap(), manifest);
}

/// Case 6: temporaries a killed process left are removed when the next one starts.
#[test]
fn stale_temporaries_are_removed_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let (data, out) = (corpus(dir.path()), dir.path().join("r"));
    assert_ok(&train(&data, &out, &["--max-iters", "2"]));
    let stale = [
        "model.safetensors.tmp.999999999",
        "train_state.safetensors.tmp.999999998",
    ];
    for name in stale {
        std::fs::write(out.join(name), vec![0u8; 1000]).unwrap();
    }
    assert_ok(&run(&[
        "train",
        "--resume",
        s(&out),
        "--max-iters",
        "3",
        "-q",
    ]));
    for name in stale {
        assert!(!out.join(name).exists(), "{name} left");
    }
    let prepared = dir.path().join("p");
    let prepare = || {
        run(&[
            "prepare",
            s(&data),
            "--tokenizer",
            "char",
            "--out",
            s(&prepared),
        ])
    };
    assert_ok(&prepare());
    std::fs::write(prepared.join("manifest.json.tmp.999999999"), b"x").unwrap();
    std::fs::write(prepared.join("train_000009.bin.tmp"), b"x").unwrap();
    assert_ok(&prepare());
    let names: Vec<String> = std::fs::read_dir(&prepared)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains(".tmp")), "{names:?}");
}

/// Case 7: prepare's zero settings, and a BPE vocabulary smaller than asked.
#[test]
fn contradictory_settings_are_refused_or_reported() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let out = dir.path().join("p");
    for (flag, value) in [("--threads", "0"), ("--shard-tokens", "0")] {
        let args = [
            "prepare",
            s(&data),
            "--tokenizer",
            "char",
            "--out",
            s(&out),
            flag,
            value,
        ];
        assert_fails(&run(&args), &[&format!("{flag} must be at least 1")]);
    }
    let tok = dir.path().join("tok.json");
    let bpe = run(&[
        "tokenizer",
        "train",
        "--vocab-size",
        "10000000",
        "--out",
        s(&tok),
        s(&data),
    ]);
    let err = assert_ok(&bpe);
    assert!(
        err.contains("warning") && err.contains("not the 10000000"),
        "{err}"
    );
}

/// Case 7: shards prepared with GPT-2 train with GPT-2 (and say so), a
/// --tokenizer naming another vocabulary is refused, and a resume on other
/// data says so.
#[test]
fn the_tokenizer_recorded_is_the_one_trained_with() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    // JSON Lines: one document a record, so both splits get some.
    let records = dir.path().join("docs.jsonl");
    let lines: String = (0..200)
        .map(|i| format!("{}\n", serde_json::json!({ "text": text(i) })))
        .collect();
    std::fs::write(&records, lines).unwrap();
    let shards = dir.path().join("gpt2");
    assert_ok(&run(&[
        "prepare",
        s(&records),
        "--tokenizer",
        "gpt2",
        "--out",
        s(&shards),
    ]));
    let out = dir.path().join("r");
    let err = assert_ok(&train(&shards, &out, &["--max-iters", "1"]));
    assert!(
        err.contains("warning") && err.contains("50257 tokens"),
        "{err}"
    );
    let run_file = std::fs::read_to_string(out.join("train_config.json")).unwrap();
    assert!(run_file.contains("\"tokenizer\": \"gpt2\""), "{run_file}");
    let tok = dir.path().join("tok.json");
    assert_ok(&run(&[
        "tokenizer",
        "train",
        "--vocab-size",
        "300",
        "--out",
        s(&tok),
        s(&data),
    ]));
    let other = train(
        &shards,
        &dir.path().join("o"),
        &["--max-iters", "1", "--tokenizer", s(&tok)],
    );
    assert_fails(
        &other,
        &["these shards were made with", "leave --tokenizer out"],
    );

    let (text_run, other_data) = (dir.path().join("t"), dir.path().join("other.txt"));
    std::fs::write(&other_data, (100..500).map(text).collect::<String>()).unwrap();
    assert_ok(&train(&data, &text_run, &["--max-iters", "1"]));
    let resumed = run(&[
        "train",
        "--resume",
        s(&text_run),
        "--data",
        s(&other_data),
        "--max-iters",
        "2",
        "-q",
    ]);
    let err = assert_ok(&resumed);
    assert!(
        err.contains("warning") && err.contains("other.txt"),
        "{err}"
    );
}

/// Case 8: errors that say what happened and what to do.
#[test]
fn unclear_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let (data, out) = (corpus(dir.path()), dir.path().join("r"));
    let zero = train(&data, &out, &["--max-iters", "0"]);
    assert_fails(&zero, &["--max-iters must be at least 1"]);
    // A run killed before its first checkpoint holds only its run file.
    assert_ok(&train(&data, &out, &["--max-iters", "1"]));
    std::fs::remove_file(out.join("train_state.safetensors")).unwrap();
    let resume = run(&["train", "--resume", s(&out), "--max-iters", "3"]);
    assert_fails(
        &resume,
        &["stopped before its first checkpoint", "--overwrite"],
    );

    // A text without a newline makes a model that cannot read the default prompt.
    let flat = dir.path().join("flat.txt");
    std::fs::write(&flat, "abcdefgh ".repeat(300)).unwrap();
    let flat_run = dir.path().join("f");
    assert_ok(&train(&flat, &flat_run, &["--max-iters", "1"]));
    assert_fails(&sample(&flat_run, &[]), &["default prompt", "--prompt"]);
    let cold = sample(&flat_run, &["--prompt", "abc", "--temperature", "-1"]);
    assert_fails(&cold, &["--temperature"]);
    assert!(cold.stdout.is_empty(), "the prompt is not printed first");

    let prepared = dir.path().join("p");
    let prepare = |seed: &str| {
        let args = [
            "prepare",
            s(&data),
            "--tokenizer",
            "char",
            "--out",
            s(&prepared),
        ];
        run(&[&args[..], &["--seed", seed]].concat())
    };
    assert_ok(&prepare("1"));
    let err = assert_fails(&prepare("2"), &["--seed 1 (now 2)"]);
    assert!(!err.contains("PrepareSettings"), "{err}");
}

/// Case 9: damaged checkpoints and a tokenizer of another size are refused.
#[test]
fn damaged_checkpoints_are_detected() {
    let dir = tempfile::tempdir().unwrap();
    let (data, out) = (corpus(dir.path()), dir.path().join("r"));
    assert_ok(&train(&data, &out, &["--max-iters", "2"]));
    assert_ok(&sample(&out, &["--prompt", "line"]));
    let model = out.join("model.safetensors");
    let good = std::fs::read(&model).unwrap();
    let mut bad = good.clone();
    let end = bad.len();
    bad[end - 200..end - 136]
        .iter_mut()
        .for_each(|b| *b ^= 0x5a);
    std::fs::write(&model, &bad).unwrap();
    assert_fails(
        &sample(&out, &["--prompt", "line"]),
        &["model.safetensors", "checksum mismatch"],
    );
    std::fs::write(&model, &good).unwrap();

    let state = out.join("train_state.safetensors");
    let mut bad = std::fs::read(&state).unwrap();
    let end = bad.len();
    bad[end - 100] ^= 1;
    std::fs::write(&state, &bad).unwrap();
    let resume = run(&["train", "--resume", s(&out), "--max-iters", "3"]);
    assert_fails(&resume, &["train_state.safetensors", "checksum mismatch"]);

    // A tokenizer cut to 10 of its tokens, with and without the model's record of it.
    let tokenizer = out.join("tokenizer.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tokenizer).unwrap()).unwrap();
    let vocab = json["model"]["vocab"].as_object_mut().unwrap();
    vocab.retain(|_, id| id.as_u64().unwrap() < 10);
    std::fs::write(&tokenizer, serde_json::to_vec(&json).unwrap()).unwrap();
    assert_fails(
        &sample(&out, &["--prompt", "l"]),
        &["tokenizer.json", "does not match"],
    );
    rewrite_model(&out, |_, _| {}); // as written before checksums: no record of the tokenizer
    assert_fails(
        &sample(&out, &["--prompt", "l"]),
        &["tokenizer.json", "do not belong together"],
    );
}
