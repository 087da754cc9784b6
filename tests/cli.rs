//! End-to-end tests of the `lmforge` binary: train, sample, resume, errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn lmforge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lmforge"))
}

fn run(args: &[&str]) -> Output {
    lmforge().args(args).output().expect("lmforge runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The first 60 kB of Tiny Shakespeare (or, without ../shared, a generated text).
fn corpus(dir: &Path) -> PathBuf {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/tinyshakespeare.txt");
    let text = match std::fs::read_to_string(shared) {
        Ok(t) => t[..60_000].to_string(),
        Err(_) => (0..3000)
            .map(|i| format!("line {i}: the quick brown fox jumps over the lazy dog.\n"))
            .collect(),
    };
    let path = dir.join("corpus.txt");
    std::fs::write(&path, text).unwrap();
    path
}

/// A small model that trains in about a second.
const TINY: &[&str] = &[
    "--n-layer",
    "2",
    "--n-head",
    "2",
    "--n-embd",
    "32",
    "--block",
    "16",
    "--batch",
    "4",
    "--eval-iters",
    "2",
    "--threads",
    "2",
    "--dropout",
    "0.1",
    "--grad-accum",
    "2",
    "--warmup-iters",
    "2",
    "-q",
];

fn train(data: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(TINY);
    if !extra.contains(&"--eval-interval") {
        args.extend_from_slice(&["--eval-interval", "4"]);
    }
    args.extend_from_slice(extra);
    run(&args)
}

/// `(step, train_loss)` of every non-eval line, and `(step, val_loss)` of every eval line.
/// `(step, loss)` pairs.
type Curve = Vec<(u64, f64)>;

fn losses(run_dir: &Path) -> (Curve, Curve) {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let step = v["step"].as_u64().unwrap();
        if v["eval"].as_bool() == Some(true) {
            val.push((step, v["val_loss"].as_f64().unwrap()));
        } else {
            assert!(v["lr"].as_f64().unwrap() > 0.0 && v["tokens_per_sec"].as_f64().unwrap() > 0.0);
            train.push((step, v["train_loss"].as_f64().unwrap()));
        }
    }
    (train, val)
}

#[test]
fn train_then_sample() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let out = dir.path().join("run");
    let result = train(&data, &out, &["--max-iters", "12"]);
    assert!(result.status.success(), "{}", stderr(&result));
    for file in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "train_config.json",
        "train_state.safetensors",
    ] {
        assert!(out.join(file).exists(), "{file} missing");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert!(
        config["eos_token_id"].is_null() && config["bos_token_id"].is_null(),
        "a character vocabulary has no end-of-text token, so transformers must not assume one"
    );
    let (train, val) = losses(&out);
    assert_eq!(
        train.iter().map(|s| s.0).collect::<Vec<_>>(),
        (1..=12).collect::<Vec<_>>()
    );
    assert_eq!(
        val.iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![0, 4, 8, 12]
    );
    assert!(val[3].1 < val[0].1, "validation loss falls: {val:?}");

    let sample = run(&[
        "sample",
        out.to_str().unwrap(),
        "--prompt",
        "ROMEO:",
        "--max-new-tokens",
        "50",
        "--seed",
        "1",
        "--top-k",
        "5",
        "--temperature",
        "0.8",
    ]);
    assert!(sample.status.success(), "{}", stderr(&sample));
    let text = String::from_utf8(sample.stdout).unwrap();
    assert!(text.starts_with("ROMEO:"));
    assert_eq!(
        text.trim_end_matches('\n').chars().count(),
        "ROMEO:".len() + 50
    );
    // Same seed, same text; another seed, other text.
    let again = run(&[
        "sample",
        out.to_str().unwrap(),
        "--prompt",
        "ROMEO:",
        "--max-new-tokens",
        "50",
        "--seed",
        "1",
        "--top-k",
        "5",
        "--temperature",
        "0.8",
    ]);
    assert_eq!(String::from_utf8(again.stdout).unwrap(), text);
    let other = run(&[
        "sample",
        out.to_str().unwrap(),
        "--prompt",
        "ROMEO:",
        "--max-new-tokens",
        "50",
        "--seed",
        "2",
    ]);
    assert_ne!(String::from_utf8(other.stdout).unwrap(), text);
}

#[test]
fn same_seed_same_losses_and_another_seed_differs() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    assert!(train(&data, &a, &["--max-iters", "6"]).status.success());
    assert!(train(&data, &b, &["--max-iters", "6"]).status.success());
    assert!(
        train(&data, &c, &["--max-iters", "6", "--seed", "7"])
            .status
            .success()
    );
    assert_eq!(losses(&a), losses(&b));
    assert_ne!(losses(&a).0, losses(&c).0);
}

#[test]
fn resumed_run_matches_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let (full, split) = (dir.path().join("full"), dir.path().join("split"));
    let schedule = ["--lr-decay-iters", "12"];
    assert!(
        train(
            &data,
            &full,
            &[&["--max-iters", "12"][..], &schedule].concat()
        )
        .status
        .success()
    );
    assert!(
        train(
            &data,
            &split,
            &[&["--max-iters", "5"][..], &schedule].concat()
        )
        .status
        .success()
    );
    let resumed = run(&[
        "train",
        "--resume",
        split.to_str().unwrap(),
        "--max-iters",
        "12",
        "-q",
    ]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let (full_train, full_val) = losses(&full);
    let (split_train, split_val) = losses(&split);
    assert_eq!(full_train, split_train);
    // The first session also evaluated at its own last step (5); the shared points agree.
    assert_eq!(
        split_val
            .iter()
            .filter(|(step, _)| *step != 5)
            .cloned()
            .collect::<Vec<_>>(),
        full_val
    );
    let model = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert_eq!(model(&full), model(&split), "identical final weights");
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_resume_continues_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let (full, stopped) = (dir.path().join("full"), dir.path().join("stopped"));
    let long = [
        "--max-iters",
        "400",
        "--checkpoint-interval",
        "1000",
        "--eval-interval",
        "100",
    ];
    let mut args: Vec<&str> = vec![
        "train",
        "--data",
        data.to_str().unwrap(),
        "--out",
        stopped.to_str().unwrap(),
    ];
    args.extend_from_slice(TINY);
    args.extend_from_slice(&long);
    let log = dir.path().join("stderr.txt");
    let mut child = lmforge()
        .args(&args)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Wait until a few steps are logged, then press Ctrl-C.
    let metrics = stopped.join("metrics.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_to_string(&metrics).map_or(0, |t| t.lines().count()) < 4 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "training exited before Ctrl-C"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "training did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "interrupted runs exit with 130");
    let (partial, evals) = losses(&stopped);
    let stopped_at = partial.last().unwrap().0;
    assert!(stopped_at < 400, "stopped early (at {stopped_at})");
    // The closing line gives the losses of the last evaluation under that
    // evaluation's step, not under the step where the run stopped.
    let (eval_at, val) = *evals.last().unwrap();
    let closing = std::fs::read_to_string(&log).unwrap();
    let closing = closing.lines().rev().nth(1).unwrap();
    let expected = if eval_at == stopped_at {
        format!("step {eval_at}: train loss ")
    } else {
        format!("step {stopped_at}, ")
    };
    assert!(closing.starts_with(&expected), "{closing}");
    assert!(closing.contains(&format!("val loss {val:.4}")), "{closing}");
    if eval_at != stopped_at {
        assert!(
            closing.contains(&format!("last evaluation at step {eval_at}: ")),
            "{closing}"
        );
    }

    let resumed = run(&["train", "--resume", stopped.to_str().unwrap(), "-q"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(train(&data, &full, &long).status.success());
    assert_eq!(losses(&full), losses(&stopped));
}

#[test]
fn bad_inputs_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let out = out.to_str().unwrap();
    let expect_error = |args: &[&str], needle: &str| {
        let result = run(args);
        assert!(!result.status.success(), "{args:?} should fail");
        let err = stderr(&result);
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in: {err}"
        );
    };
    let missing = dir.path().join("missing.txt");
    expect_error(
        &["train", "--data", missing.to_str().unwrap(), "--out", out],
        "missing.txt",
    );
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    expect_error(
        &["train", "--data", empty.to_str().unwrap(), "--out", out],
        "empty",
    );
    let binary = dir.path().join("binary.txt");
    std::fs::write(&binary, b"abc\x00\xff\xfe rest").unwrap();
    expect_error(
        &["train", "--data", binary.to_str().unwrap(), "--out", out],
        "offset 4",
    );
    let short = dir.path().join("short.txt");
    std::fs::write(&short, "just a few characters here").unwrap();
    expect_error(
        &["train", "--data", short.to_str().unwrap(), "--out", out],
        "fewer than one window",
    );
    let data = corpus(dir.path());
    let data = data.to_str().unwrap();
    expect_error(
        &[
            "train", "--data", data, "--out", out, "--n-embd", "30", "--n-head", "4",
        ],
        "divisible",
    );
    expect_error(
        &["train", "--data", data, "--out", out, "--preset", "huge"],
        "char-cpu",
    );
    expect_error(
        &[
            "train",
            "--resume",
            dir.path().join("nothing").to_str().unwrap(),
        ],
        "train_config.json",
    );

    let mut args = vec!["train", "--data", data, "--out", out];
    args.extend_from_slice(TINY);
    args.extend_from_slice(&["--max-iters", "2"]);
    assert!(run(&args).status.success());
    expect_error(&["sample", out, "--prompt", "héllo ☃"], "'☃'");
    expect_error(&["sample", out, "--temperature=-1"], "temperature");
    expect_error(
        &["train", "--resume", out, "--max-iters", "2"],
        "already trained",
    );
    expect_error(
        &[
            "train",
            "--resume",
            out,
            "--max-iters",
            "4",
            "--n-embd",
            "64",
        ],
        "model options differ",
    );
}

#[test]
fn long_prompt_is_cropped_and_crlf_bom_text_trains() {
    let dir = tempfile::tempdir().unwrap();
    let text: String = (0..2000)
        .map(|i| format!("row {i}, some words\r\n"))
        .collect();
    let data = dir.path().join("windows.txt");
    std::fs::write(&data, format!("\u{feff}{text}")).unwrap();
    let out = dir.path().join("run");
    let result = train(&data, &out, &["--max-iters", "2"]);
    assert!(result.status.success(), "{}", stderr(&result));
    let vocab = std::fs::read_to_string(out.join("tokenizer.json")).unwrap();
    assert!(
        !vocab.contains("\\r") && !vocab.contains("\\ufeff"),
        "CR and BOM were normalised away"
    );
    let prompt = "row 1, some words\n".repeat(20); // longer than block 16
    let sample = run(&[
        "sample",
        out.to_str().unwrap(),
        "--prompt",
        &prompt,
        "--max-new-tokens",
        "5",
    ]);
    assert!(sample.status.success(), "{}", stderr(&sample));
    assert_eq!(
        String::from_utf8(sample.stdout).unwrap().chars().count(),
        prompt.chars().count() + 5 + 1
    );
}

#[test]
fn bigram_preset_trains() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let out = dir.path().join("bigram");
    let result = run(&[
        "train",
        "--preset",
        "bigram",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--max-iters",
        "300",
        "--eval-iters",
        "20",
        "-q",
    ]);
    assert!(result.status.success(), "{}", stderr(&result));
    let (_, val) = losses(&out);
    assert!(
        val.last().unwrap().1 < val[0].1 - 0.5,
        "bigram learns: {val:?}"
    );
    let sample = run(&["sample", out.to_str().unwrap(), "--max-new-tokens", "20"]);
    assert!(sample.status.success(), "{}", stderr(&sample));
}

#[test]
fn bench_train_reports_speed_and_memory() {
    let out = run(&[
        "bench",
        "train",
        "--steps",
        "3",
        "--warmup-steps",
        "1",
        "--n-layer",
        "1",
        "--threads",
        "2",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let number = |key: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("{key} missing in {text}"));
        line[key.len()..].trim().parse().unwrap()
    };
    assert!(number("lmforge tokens/s:") > 0.0);
    assert!(number("lmforge step ms:") > 0.0);
    assert!(number("lmforge peak RSS MiB:") > 1.0);
    assert!(
        text.starts_with("lmforge char-cpu: ") && text.contains(", vocab 65,"),
        "a char preset is measured with Tiny Shakespeare's 65 characters: {text}"
    );
}

#[test]
fn bench_takes_the_vocabulary_from_the_preset_tokenizer() {
    // The gpt2 preset, shrunk so the step is quick; its vocabulary stays GPT-2's.
    let args = [
        "--preset",
        "gpt2",
        "--n-layer",
        "1",
        "--n-embd",
        "32",
        "--n-head",
        "2",
        "--block",
        "8",
        "--batch",
        "1",
    ];
    let out = run(&[
        &["bench", "train", "--steps", "1", "--warmup-steps", "0"],
        &args[..],
    ]
    .concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(", vocab 50257,"), "{text}");
    let out = run(&[
        &[
            "bench",
            "sample",
            "--prompt-tokens",
            "2",
            "--new-tokens",
            "2",
        ],
        &args[..],
        &["--vocab", "300"],
    ]
    .concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(", vocab 300,"),
        "--vocab overrides the preset's: {text}"
    );
}

#[test]
fn bench_sample_times_a_models_own_weights() {
    let gguf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf/spm.gguf");
    let out = run(&[
        "bench",
        "sample",
        "--model",
        gguf.to_str().unwrap(),
        "--weights",
        "q8_0",
        "--prompt-tokens",
        "4",
        "--new-tokens",
        "8",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("spm.gguf: 34912 params (q8_0 weights), vocab 400"),
        "{text}"
    );
    assert!(text.contains("lmforge prompt tokens/s:"), "{text}");
    assert!(!text.contains("without cache"), "{text}");
}

#[test]
fn bench_sample_reports_cached_and_uncached_speed() {
    let out = run(&[
        "bench",
        "sample",
        "--preset",
        "char-cpu",
        "--prompt-tokens",
        "4",
        "--new-tokens",
        "8",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains(", vocab 65,"), "{text}");
    for key in [
        "lmforge prompt tokens/s:",
        "lmforge sample tokens/s:",
        "lmforge sample tokens/s without cache:",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("{key} missing in {text}"));
        assert!(line[key.len()..].trim().parse::<f64>().unwrap() > 0.0);
    }
    let too_long = run(&[
        "bench",
        "sample",
        "--preset",
        "char-cpu",
        "--prompt-tokens",
        "60",
        "--new-tokens",
        "8",
    ]);
    assert!(
        stderr(&too_long).contains("block_size"),
        "{}",
        stderr(&too_long)
    );
}

/// `bench eval` shows each stage's progress while it runs (lines on stderr
/// when it is not a terminal), then its figures.
#[test]
fn bench_eval_shows_progress_then_its_figures() {
    let out = run(&[
        "bench",
        "eval",
        "--preset",
        "char-cpu",
        "--threads",
        "1",
        "--decode-tokens",
        "20",
        "--windows",
        "10",
        "--examples",
        "12",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let progress = stderr(&out);
    for line in ["decoding 20/20", "scoring windows 10/10"] {
        assert!(
            progress.lines().any(|l| l == line),
            "{line:?} missing in {progress}"
        );
    }
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("scoring tokens/s: "), "{text}");
    assert!(text.contains("12 HellaSwag-layout questions"), "{text}");
}

#[test]
fn gpt2_tokenizer_trains_samples_and_is_kept_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let out = dir.path().join("bpe");
    let result = train(&data, &out, &["--tokenizer", "gpt2", "--max-iters", "3"]);
    assert!(result.status.success(), "{}", stderr(&result));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["vocab_size"], 50257);
    assert_eq!(config["eos_token_id"], 50256);
    assert_eq!(config["bos_token_id"], 50256);
    let sample = run(&[
        "sample",
        out.to_str().unwrap(),
        "--prompt",
        "ROMEO: é 🎉",
        "--max-new-tokens",
        "5",
    ]);
    assert!(sample.status.success(), "{}", stderr(&sample));
    assert!(
        String::from_utf8(sample.stdout)
            .unwrap()
            .starts_with("ROMEO: é 🎉")
    );
    let changed = run(&[
        "train",
        "--resume",
        out.to_str().unwrap(),
        "--max-iters",
        "6",
        "--tokenizer",
        "char",
    ]);
    assert!(
        stderr(&changed).contains("cannot change"),
        "{}",
        stderr(&changed)
    );
}

/// `prepare` then `train --data DIR` from the memory-mapped shards, resumed exactly.
#[test]
fn train_from_prepared_shards_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(corpus(dir.path())).unwrap();
    let docs = dir.path().join("docs.jsonl");
    let lines: String = text
        .split("\n\n")
        .map(|d| format!("{}\n", serde_json::json!({ "text": d })))
        .collect();
    std::fs::write(&docs, lines).unwrap();
    let shards = dir.path().join("shards");
    let prep = run(&[
        "prepare",
        docs.to_str().unwrap(),
        "--tokenizer",
        "char",
        "--out",
        shards.to_str().unwrap(),
    ]);
    assert!(prep.status.success(), "{}", stderr(&prep));
    let (full, split) = (dir.path().join("full"), dir.path().join("split"));
    let schedule = ["--lr-decay-iters", "8"];
    assert!(
        train(
            &shards,
            &full,
            &[&["--max-iters", "8"][..], &schedule].concat()
        )
        .status
        .success()
    );
    let first = train(
        &shards,
        &split,
        &[&["--max-iters", "4"][..], &schedule].concat(),
    );
    assert!(first.status.success(), "{}", stderr(&first));
    let resumed = run(&[
        "train",
        "--resume",
        split.to_str().unwrap(),
        "--max-iters",
        "8",
        "-q",
    ]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert_eq!(losses(&full).0, losses(&split).0);
    // The shards' tokenizer (with its <|endoftext|>) is the run's.
    let vocab = std::fs::read_to_string(full.join("tokenizer.json")).unwrap();
    assert!(vocab.contains("<|endoftext|>"));
    let sample = run(&["sample", full.to_str().unwrap(), "--max-new-tokens", "10"]);
    assert!(sample.status.success(), "{}", stderr(&sample));
}

/// nanoGPT's raw `train.bin`/`val.bin` carry no tokenizer: one must be named,
/// and ids beyond its vocabulary are reported, not a crash.
#[test]
fn nanogpt_layout_needs_a_tokenizer_and_checks_ids() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nano");
    std::fs::create_dir(&data).unwrap();
    let ids: Vec<u8> = (0..5000u32)
        .flat_map(|i| ((i * 7919 % 50000) as u16).to_le_bytes())
        .collect();
    std::fs::write(data.join("train.bin"), &ids).unwrap();
    std::fs::write(data.join("val.bin"), &ids[..2000]).unwrap();
    let out = dir.path().join("run");
    let no_tokenizer = train(&data, &out, &["--max-iters", "2"]);
    assert!(
        stderr(&no_tokenizer).contains("--tokenizer gpt2"),
        "{}",
        stderr(&no_tokenizer)
    );
    let gpt2 = train(&data, &out, &["--max-iters", "2", "--tokenizer", "gpt2"]);
    assert!(gpt2.status.success(), "{}", stderr(&gpt2));
    // A 30-character vocabulary cannot hold ids up to 50000.
    let small = dir.path().join("small.json");
    let tok =
        lmforge::tokenizer::CharTokenizer::from_text("abcdefghijklmnopqrstuvwxyz ,.\n").unwrap();
    lmforge::tokenizer::Tokenizer::save(&tok, &small).unwrap();
    let bad = train(
        &data,
        &dir.path().join("bad"),
        &["--max-iters", "2", "--tokenizer", small.to_str().unwrap()],
    );
    assert!(
        stderr(&bad).contains("outside the vocabulary"),
        "{}",
        stderr(&bad)
    );
}

/// Issue 30 item 4: one prepared file gets about `--val-fraction` of its
/// tokens as validation (its tail), with no warning, and `train` on it
/// evaluates.
#[test]
fn a_one_file_prepared_corpus_has_validation() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let shards = dir.path().join("one_doc");
    let result = run(&[
        "prepare",
        data.to_str().unwrap(),
        "--tokenizer",
        "char",
        "--out",
        shards.to_str().unwrap(),
        "-q",
    ]);
    assert!(result.status.success(), "{}", stderr(&result));
    assert!(!stderr(&result).contains("warning"), "{}", stderr(&result));
    let out = dir.path().join("run");
    let result = train(&shards, &out, &["--max-iters", "2", "--eval-interval", "1"]);
    assert!(result.status.success(), "{}", stderr(&result));
    let (_, val) = losses(&out);
    assert_eq!(val.len(), 3, "evaluated at steps 0, 1 and 2: {val:?}");
    assert!(val.iter().all(|(_, loss)| loss.is_finite() && *loss > 0.0));
}

/// Every float flag is checked finite and in range, naming the flag, before
/// any training (`--weight-decay nan` used to train and log null losses).
#[test]
fn non_finite_and_out_of_range_floats_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let out = dir.path().join("run");
    for (flag, value) in [
        ("--weight-decay", "nan"),
        ("--lr", "inf"),
        ("--lr", "-0.001"),
        ("--grad-clip", "NaN"),
        ("--beta1", "1"),
        ("--eps", "0"),
        ("--dropout", "nan"),
        ("--val-fraction", "1"),
    ] {
        let result = train(&data, &out, &["--max-iters", "2", flag, value]);
        assert!(!result.status.success(), "{flag} {value} should fail");
        let err = stderr(&result);
        assert!(err.contains(flag), "{flag} {value}: {err}");
        assert!(!out.join("metrics.jsonl").exists(), "nothing was trained");
    }
}

/// A resume with options it cannot honour fails before the corpus is read:
/// here the corpus is gone, and the error is still about the options.
#[test]
fn resume_checks_options_before_reading_the_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let out = dir.path().join("run");
    assert!(train(&data, &out, &["--max-iters", "2"]).status.success());
    std::fs::remove_file(&data).unwrap();
    let run_dir = out.to_str().unwrap();
    for (args, needle) in [
        (
            &["--max-iters", "4", "--n-layer", "3"][..],
            "model options differ",
        ),
        (
            &["--max-iters", "4", "--tokenizer", "gpt2"][..],
            "cannot change on --resume",
        ),
        (&["--max-iters", "2"][..], "already trained"),
        (&["--max-iters", "4", "--lr", "nan"][..], "--lr"),
    ] {
        let result = run(&[&["train", "--resume", run_dir][..], args].concat());
        assert!(!result.status.success(), "{args:?} should fail");
        let err = stderr(&result);
        assert!(
            err.contains(needle) && !err.contains("corpus.txt"),
            "{args:?}: {err}"
        );
    }
    let result = run(&["train", "--resume", run_dir, "--max-iters", "4", "-q"]);
    assert!(
        stderr(&result).contains("corpus.txt"),
        "then the missing corpus is reported"
    );
}

/// Runs written before train_config.json had a format, a version and the
/// vocabulary size still resume, exactly.
#[test]
fn run_files_of_earlier_versions_resume() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let (full, old) = (dir.path().join("full"), dir.path().join("old"));
    assert!(train(&data, &full, &["--max-iters", "6"]).status.success());
    assert!(train(&data, &old, &["--max-iters", "3"]).status.success());
    let path = old.join("train_config.json");
    let mut run_file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let fields = run_file.as_object_mut().unwrap();
    fields.remove("format");
    fields.remove("version");
    fields["config"]
        .as_object_mut()
        .unwrap()
        .remove("vocab_size");
    std::fs::write(&path, serde_json::to_string(&run_file).unwrap()).unwrap();
    let result = run(&[
        "train",
        "--resume",
        old.to_str().unwrap(),
        "--max-iters",
        "6",
        "-q",
    ]);
    assert!(result.status.success(), "{}", stderr(&result));
    assert_eq!(losses(&full).0, losses(&old).0);
}
