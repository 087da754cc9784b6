//! Nothing lost, nothing silent, round 2 (issue 27, items 5, 6, 8 and the
//! fine-tuning part of 10), with the real binary: lmforge reads back every
//! metrics line it writes and skips (with a warning naming it) a line it
//! cannot; JSON Lines with a byte-order mark, FIFOs in input folders,
//! Hugging Face folders with tensors of the wrong shape, config fields of
//! the wrong type or no tokenizer; conversations whose batch has no target.

mod runs;

use runs::{assert_fails, assert_ok, run};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
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
    "--threads",
    "1",
    "-q",
];

/// A tiny character-level run of `iters` steps on a generated text, evaluated every 5.
fn tiny_run(dir: &Path, name: &str, iters: &str) -> PathBuf {
    let data = dir.join("corpus.txt");
    let text: String = (0..200)
        .map(|i| format!("line {i}: the quick brown fox jumps over the lazy dog.\n"))
        .collect();
    std::fs::write(&data, text).unwrap();
    let out = dir.join(name);
    let args = ["train", "--data", s(&data), "--out", s(&out)];
    let schedule = ["--max-iters", iters, "--eval-interval", "5"];
    assert_ok(&run(&[&args[..], &schedule[..], TINY].concat()));
    out
}

/// Insert `lines` into the run's metrics log after its line `after` (1-based).
fn insert_metrics_lines(run_dir: &Path, after: usize, lines: &[&str]) {
    let path = run_dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut all: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        all.insert(after + i, line);
    }
    std::fs::write(&path, all.join("\n") + "\n").unwrap();
}

/// Item 5: a step skipped by `--on-nan skip` and a corrupt line in the middle
/// of `metrics.jsonl`: `plot`, `report` and `runs` read the rest, and warn
/// of the corrupt line by its number.
#[test]
fn plot_report_and_runs_read_skipped_steps_and_skip_a_corrupt_line() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = tiny_run(dir.path(), "r", "10");
    // Line 1 is the evaluation at step 0, lines 2.. the steps.
    insert_metrics_lines(
        &run_dir,
        3,
        &[
            r#"{"lr":0.001,"skipped":true,"step":3}"#,
            r#"{"step":4,"train_lo"#,
        ],
    );
    let picture = dir.path().join("loss.svg");
    let plotted = run(&["plot", s(&run_dir), "--out", s(&picture)]);
    let err = assert_ok(&plotted);
    assert!(err.contains("metrics.jsonl:5"), "{err}");
    assert!(!err.contains("metrics.jsonl:4"), "{err}");
    assert!(std::fs::read_to_string(&picture).unwrap().contains("<svg"));
    let report = run(&["report", s(&run_dir)]);
    let err = assert_ok(&report);
    assert!(err.contains("metrics.jsonl:5"), "{err}");
    let html = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    assert!(
        html.contains("skipped"),
        "the report counts the skipped step"
    );
    let listed = run(&["runs", s(dir.path())]);
    assert_ok(&listed);
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(table.contains("metrics.jsonl:5"), "{table}");
}

/// Item 5: the loss plot drawn during training reads the skipped steps.
#[test]
fn the_live_plot_reads_skipped_steps() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = tiny_run(dir.path(), "r", "10");
    insert_metrics_lines(&run_dir, 3, &[r#"{"lr":0.001,"skipped":true,"step":3}"#]);
    let resumed = run(&[
        &["train", "--resume", s(&run_dir), "--max-iters", "15"][..],
        &["--threads", "1"][..],
    ]
    .concat());
    let err = assert_ok(&resumed);
    assert!(!err.contains("could not draw"), "{err}");
    assert!(run_dir.join("loss.png").exists());
}

/// Item 5: `runs` says why a column is `-`.
#[test]
fn runs_says_why_a_column_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = tiny_run(dir.path(), "r", "5");
    std::fs::remove_file(run_dir.join("metrics.jsonl")).unwrap();
    let listed = run(&["runs", s(dir.path())]);
    assert_ok(&listed);
    let table = String::from_utf8_lossy(&listed.stdout);
    assert!(table.contains("metrics.jsonl"), "{table}");
    assert!(table.contains("steps"), "{table}");
}

/// Item 6: JSON Lines starting with a UTF-8 byte-order mark, for `prepare`,
/// `train --data` and `train --sft`.
#[test]
fn json_lines_with_a_byte_order_mark_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs.jsonl");
    let lines: String = (0..50)
        .map(|i| format!("{{\"text\": \"document {i} about the lazy dog\"}}\n"))
        .collect();
    std::fs::write(&docs, format!("\u{feff}{lines}")).unwrap();
    let shards = dir.path().join("shards");
    let prepared = run(&[
        "prepare",
        s(&docs),
        "--tokenizer",
        "gpt2",
        "--out",
        s(&shards),
    ]);
    assert_ok(&prepared);
    let out = dir.path().join("r");
    let args = ["train", "--data", s(&docs), "--out", s(&out)];
    assert_ok(&run(&[&args[..], &["--max-iters", "2"][..], TINY].concat()));

    let chats = dir.path().join("chats.jsonl");
    let lines: String = (0..20)
        .map(|i| format!("{{\"prompt\": \"What is {i}?\", \"response\": \"It is {i}.\"}}\n"))
        .collect();
    std::fs::write(&chats, format!("\u{feff}{lines}")).unwrap();
    let sft = run(&[
        "train",
        "--init-from",
        s(&tiny_gpt2_fixture()),
        "--sft",
        s(&chats),
        "--max-iters",
        "2",
        "--block",
        "16",
        "--threads",
        "1",
        "-q",
        "--out",
        s(&dir.path().join("sft")),
    ]);
    assert_ok(&sft);
}

/// Item 6: a FIFO in an input directory is skipped with a warning, not
/// waited on for ever.
#[test]
fn a_fifo_in_an_input_directory_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    std::fs::write(inputs.join("a.txt"), "some text to read\n".repeat(50)).unwrap();
    let fifo = inputs.join("pipe");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let mut child = Command::new(env!("CARGO_BIN_EXE_lmforge"))
        .args(["prepare", s(&inputs), "--tokenizer", "gpt2", "--out"])
        .arg(dir.path().join("shards"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("prepare waited on the FIFO");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let err = assert_ok(&out);
    assert!(
        err.contains("pipe") && err.contains("not a regular file"),
        "{err}"
    );
}

fn tiny_gpt2_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf_gpt2/single")
}

/// A copy of the tiny GPT-2 folder (vocabulary 400, 32 dims, 16 positions)
/// with `files` only.
fn gpt2_folder(dir: &Path, files: &[&str]) -> PathBuf {
    let folder = dir.join("hf");
    std::fs::create_dir_all(&folder).unwrap();
    for file in files {
        std::fs::copy(tiny_gpt2_fixture().join(file), folder.join(file)).unwrap();
    }
    folder
}

/// Rewrite the folder's weights with `tensor` declared of shape `shape`
/// (the same number of values).
fn reshape_tensor(folder: &Path, tensor: &str, shape: &[usize]) {
    use safetensors::tensor::{SafeTensors, TensorView};
    let path = folder.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let views: Vec<(String, TensorView)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let shape = if name.ends_with(tensor) {
                shape.to_vec()
            } else {
                view.shape().to_vec()
            };
            let view = TensorView::new(view.dtype(), shape, view.data()).unwrap();
            (name, view)
        })
        .collect();
    let out = safetensors::serialize(views, None).unwrap();
    std::fs::write(&path, out).unwrap();
}

/// Item 6: a tensor of the right size but the wrong shape is refused, by
/// name, with the shape found and the one expected.
#[test]
fn import_hf_checks_every_tensor_shape() {
    for (tensor, shape, found, expected) in [
        ("wte.weight", [32, 400], "[32, 400]", "[400, 32]"),
        ("wpe.weight", [32, 16], "[32, 16]", "[16, 32]"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let folder = gpt2_folder(
            dir.path(),
            &["config.json", "model.safetensors", "tokenizer.json"],
        );
        reshape_tensor(&folder, tensor, &shape);
        let out = dir.path().join("run");
        let imported = run(&["import-hf", s(&folder), "--out", s(&out)]);
        assert_fails(&imported, &[tensor, found, expected]);
    }
}

/// Item 6: config fields of the wrong type say what is wrong with them.
#[test]
fn import_hf_config_fields_of_the_wrong_type_are_named() {
    for (field, value, says) in [
        ("n_embd", serde_json::json!(-32), "-32"),
        ("vocab_size", serde_json::json!("50257"), "\"50257\""),
        ("n_layer", serde_json::json!(2.5), "2.5"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let folder = gpt2_folder(
            dir.path(),
            &["config.json", "model.safetensors", "tokenizer.json"],
        );
        let path = folder.join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        config[field] = value;
        std::fs::write(&path, config.to_string()).unwrap();
        let imported = run(&["import-hf", s(&folder), "--out", s(&dir.path().join("r"))]);
        let err = assert_fails(&imported, &[field, says, "whole number"]);
        assert!(!err.contains("missing"), "{err}");
    }
}

/// Item 8: a folder without tokenizer files imports with `--tokenizer`,
/// whose size must fit the config's vocabulary.
#[test]
fn import_hf_takes_a_tokenizer_for_folders_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let folder = gpt2_folder(dir.path(), &["config.json", "model.safetensors"]);
    let out = dir.path().join("run");
    let bare = run(&["import-hf", s(&folder), "--out", s(&out)]);
    assert_fails(&bare, &["--tokenizer"]);
    let gpt2 = run(&[
        "import-hf",
        s(&folder),
        "--tokenizer",
        "gpt2",
        "--out",
        s(&out),
    ]);
    assert_fails(&gpt2, &["50257", "400"]);
    let file = tiny_gpt2_fixture().join("tokenizer.json");
    let given = run(&[
        "import-hf",
        s(&folder),
        "--tokenizer",
        s(&file),
        "--out",
        s(&out),
    ]);
    assert_ok(&given);
    let sampled = run(&[
        "sample",
        s(&out),
        "--max-new-tokens",
        "4",
        "--prompt",
        "the",
    ]);
    assert_ok(&sampled);
}

/// Item 10: in `--sft`, a step whose batch holds only prompt tokens (every
/// target masked) is not logged as a loss of 0: it is said to be skipped,
/// and the metrics reader reads it.
#[test]
fn sft_steps_with_every_target_masked_are_not_losses_of_zero() {
    let dir = tempfile::tempdir().unwrap();
    let chats = dir.path().join("chats.jsonl");
    let prompt = "tell me a long story about the quick brown fox and the lazy dog ".repeat(6);
    let lines: String = (0..8)
        .map(|i| format!("{{\"prompt\": \"{prompt}{i}\", \"response\": \"No.\"}}\n"))
        .collect();
    std::fs::write(&chats, lines).unwrap();
    let out = dir.path().join("sft");
    let trained = run(&[
        "train",
        "--init-from",
        s(&tiny_gpt2_fixture()),
        "--sft",
        s(&chats),
        "--max-iters",
        "30",
        "--eval-interval",
        "30",
        "--eval-iters",
        "200",
        "--batch",
        "1",
        "--block",
        "8",
        "--threads",
        "1",
        "--out",
        s(&out),
    ]);
    let err = assert_ok(&trained);
    assert!(err.contains("every target"), "{err}");
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let mut masked = 0;
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if v["eval"] == true {
            continue;
        }
        if v["skipped"] == true {
            masked += 1;
            assert_eq!(v["why"], "every target masked", "{line}");
        } else {
            assert!(v["train_loss"].as_f64().unwrap() > 0.0, "{line}");
        }
    }
    assert!(masked > 0, "{log}");
    let picture = dir.path().join("loss.svg");
    assert_ok(&run(&["plot", s(&out), "--out", s(&picture)]));
}

/// Chats whose long prompts leave most `1 x 8` windows without a reply token.
fn mostly_prompt_chats(dir: &Path) -> PathBuf {
    let chats = dir.join("chats.jsonl");
    let prompt = "tell me a long story about the quick brown fox and the lazy dog ".repeat(6);
    let lines: String = (0..8)
        .map(|i| format!("{{\"prompt\": \"{prompt}{i}\", \"response\": \"No.\"}}\n"))
        .collect();
    std::fs::write(&chats, lines).unwrap();
    chats
}

fn sft_eval(chats: &Path, out: &Path, eval_iters: &str, seed: &str) -> std::process::Output {
    run(&[
        "train",
        "--init-from",
        s(&tiny_gpt2_fixture()),
        "--sft",
        s(chats),
        "--max-iters",
        "1",
        "--eval-interval",
        "1",
        "--eval-iters",
        eval_iters,
        "--seed",
        seed,
        "--batch",
        "1",
        "--block",
        "8",
        "--threads",
        "1",
        "--out",
        s(out),
    ])
}

/// Item 10: an SFT evaluation weighs each batch by the reply tokens it
/// counts. Averaging the all-masked batches in as 0 (the old way) gave the
/// untrained model a validation loss far under ln(vocabulary).
#[test]
fn sft_evaluation_weighs_batches_by_their_counted_targets() {
    let dir = tempfile::tempdir().unwrap();
    let chats = mostly_prompt_chats(dir.path());
    let out = dir.path().join("sft");
    assert_ok(&sft_eval(&chats, &out, "200", "1337"));
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let first_eval = log
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|v| v["eval"] == true)
        .expect("an evaluation line");
    let uniform = (400f64).ln();
    for split in ["train_loss", "val_loss"] {
        let loss = first_eval[split].as_f64().unwrap();
        assert!(loss > 0.5 * uniform, "{split} {loss}: {first_eval}");
    }
}

/// An SFT evaluation that counts no target at all has no loss: a clear
/// error, not a logged 0.
#[test]
fn an_sft_evaluation_without_any_reply_token_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let chats = mostly_prompt_chats(dir.path());
    let failed = (1..40).map(|seed| {
        let out = dir.path().join(format!("sft{seed}"));
        sft_eval(&chats, &out, "1", &seed.to_string())
    });
    let failed = failed
        .filter(|o| !o.status.success())
        .find(|o| String::from_utf8_lossy(&o.stderr).contains("evaluation batches"))
        .expect("some seed draws an evaluation batch without a reply token");
    assert_fails(&failed, &["was masked", "no reply token", "--block"]);
}
