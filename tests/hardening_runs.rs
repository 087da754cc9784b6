//! Nothing lost, nothing silent, round 2 (issue 27, items 2, 3, 4 and
//! prepare's part of 10), with the real binary: one writer per run, no
//! command replacing what it did not make, interrupted outputs never taken
//! for finished ones, and prepare's messages.

mod runs;

use runs::{assert_fails, assert_ok, run};

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn text(i: usize) -> String {
    format!("line {i}: the quick brown fox jumps over the lazy dog.\n")
}

/// A small generated corpus.
fn corpus(dir: &Path) -> PathBuf {
    let path = dir.join("corpus.txt");
    std::fs::write(&path, (0..400).map(text).collect::<String>()).unwrap();
    path
}

const TINY: [&str; 17] = [
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

/// A tiny new run of `iters` steps.
fn train(data: &Path, out: &Path, iters: &str) -> Output {
    let mut args = vec!["train", "--data", s(data), "--out", s(out)];
    args.extend(TINY);
    args.extend(["--max-iters", iters]);
    run(&args)
}

/// Item 2: a second writer is refused, naming the first; readers go on; a
/// holder killed with kill -9 leaves the run free.
#[test]
fn one_writer_per_run_and_readers_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let (data, r) = (corpus(dir.path()), dir.path().join("r"));
    assert_ok(&train(&data, &r, "5"));
    let mut first = Command::new(env!("CARGO_BIN_EXE_lmforge"))
        .args(["train", "--resume", s(&r), "--max-iters", "100000000"])
        .args(["--threads", "1", "-q"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = r.join(".lmforge.lock");
    let started = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.contains("started")) {
        assert!(started.elapsed() < Duration::from_secs(20), "no lock taken");
        std::thread::sleep(Duration::from_millis(20));
    }
    let holder = format!(
        "is in use by process {} (lmforge train, started ",
        first.id()
    );
    let second = run(&["train", "--resume", s(&r), "--max-iters", "8", "-q"]);
    assert_fails(&second, &[s(&r), &holder]);
    let hf = dir.path().join("hf");
    assert_ok(&run(&["sample", s(&r), "--max-new-tokens", "5"]));
    assert_ok(&run(&["export-hf", s(&r), "--out", s(&hf)]));
    let export_into = run(&["export-hf", s(&hf), "--out", s(&r), "--overwrite"]);
    assert_fails(&export_into, &[&holder]);
    let import_into = run(&["import-hf", s(&hf), "--out", s(&r), "--overwrite"]);
    assert_fails(&import_into, &[&holder]);

    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let after = run(&["train", "--resume", s(&r), "--max-iters", "1", "-q"]);
    let err = assert_fails(&after, &["already trained for"]);
    assert!(!err.contains("in use"), "{err}");
}

/// A LoRA run of the tiny model in `base`.
fn lora(dir: &Path, data: &Path, base: &Path) -> PathBuf {
    let out = dir.join("lora");
    let mut args = vec!["train", "--init-from", s(base), "--data", s(data)];
    args.extend(["--out", s(&out), "--lora-rank", "2", "--max-iters", "2"]);
    args.extend(["--block", "8", "--batch", "2", "--eval-iters", "1"]);
    args.extend(["--threads", "1", "-q"]);
    assert_ok(&run(&args));
    out
}

/// Item 3: export-hf, import-hf, merge-lora and tokenizer train refuse an
/// existing output; --overwrite replaces it with an output that works.
#[test]
fn no_command_overwrites_what_it_did_not_make() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    assert_ok(&train(&data, &a, "3"));
    assert_ok(&train(&data, &b, "4"));
    let hf = dir.path().join("hf");
    assert_ok(&run(&["export-hf", s(&a), "--out", s(&hf)]));
    let lora = lora(dir.path(), &data, &a);
    std::fs::write(b.join("notes.txt"), b"mine").unwrap();
    let before = std::fs::read(b.join("model.safetensors")).unwrap();

    let attempts: [&[&str]; 3] = [
        &["export-hf", s(&a), "--out", s(&b)],
        &["import-hf", s(&hf), "--out", s(&b)],
        &["merge-lora", s(&lora), "--out", s(&b)],
    ];
    for args in attempts {
        assert_fails(
            &run(args),
            &[s(&b), "already exists", "model.safetensors", "--overwrite"],
        );
        assert_eq!(std::fs::read(b.join("model.safetensors")).unwrap(), before);
        let resume = run(&["train", "--resume", s(&b), "--max-iters", "1", "-q"]);
        assert_fails(&resume, &["already trained for 4"]);
    }
    for args in attempts {
        let mut args = args.to_vec();
        args.push("--overwrite");
        assert_ok(&run(&args));
        assert_ok(&run(&["sample", s(&b), "--max-new-tokens", "5"]));
        for gone in [
            "train_state.safetensors",
            "metrics.jsonl",
            "train_config.json",
        ] {
            assert!(!b.join(gone).exists(), "{args:?} left the old run's {gone}");
        }
        assert_eq!(std::fs::read(b.join("notes.txt")).unwrap(), b"mine");
    }

    let tok = dir.path().join("tok.json");
    let tokenizer = |extra: &[&str]| {
        let mut args = vec!["tokenizer", "train", "--vocab-size", "300"];
        args.extend(["--out", s(&tok), s(&data)]);
        args.extend(extra);
        run(&args)
    };
    assert_ok(&tokenizer(&[]));
    std::fs::write(&tok, b"my own tokenizer").unwrap();
    assert_fails(&tokenizer(&[]), &[s(&tok), "already exists", "--overwrite"]);
    assert_eq!(std::fs::read(&tok).unwrap(), b"my own tokenizer");
    assert_ok(&tokenizer(&["--overwrite"]));
    assert!(lmforge::tokenizer::load(&tok).is_ok());
}

/// Item 4: temporaries and staging folders of killed writers are removed by
/// the next writer of the folder, whichever command it is.
#[test]
fn stale_temporaries_are_removed_by_every_writer() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let a = dir.path().join("a");
    assert_ok(&train(&data, &a, "2"));
    let lora = lora(dir.path(), &data, &a);
    let leave_stale = |out: &Path| {
        let staging = out.join(".lmforge-new.999999999");
        std::fs::create_dir_all(&staging).unwrap();
        std::fs::write(staging.join("model.safetensors.tmp.999999999"), [0u8; 100]).unwrap();
        std::fs::write(out.join("model.safetensors.tmp.999999998"), [0u8; 100]).unwrap();
        std::fs::write(out.join("config.json.tmp.999999998"), [0u8; 100]).unwrap();
    };
    let (hf, imported, merged) = (
        dir.path().join("hf"),
        dir.path().join("imported"),
        dir.path().join("merged"),
    );
    let commands: [(&Path, Vec<&str>); 3] = [
        (&hf, vec!["export-hf", s(&a), "--out", s(&hf)]),
        (&imported, vec!["import-hf", s(&hf), "--out", s(&imported)]),
        (&merged, vec!["merge-lora", s(&lora), "--out", s(&merged)]),
    ];
    for (out, args) in commands {
        leave_stale(out);
        assert_ok(&run(&args));
        let names: Vec<String> = std::fs::read_dir(out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| !n.contains(".tmp.") && !n.starts_with(".lmforge")),
            "{args:?}: {names:?}"
        );
    }
    let tok = dir.path().join("tok.json");
    std::fs::write(dir.path().join("tok.json.tmp.999999999"), [0u8; 100]).unwrap();
    let args = [
        "tokenizer",
        "train",
        "--vocab-size",
        "300",
        "--out",
        s(&tok),
        s(&data),
    ];
    assert_ok(&run(&args));
    assert!(!dir.path().join("tok.json.tmp.999999999").exists());
}

/// Item 4: shards of a `prepare` that did not finish are refused by `train`
/// (unless --allow-partial) until the same `prepare` finishes them.
#[test]
fn unfinished_shards_are_never_taken_for_finished_ones() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    // JSON Lines: one document a record, so both splits get some.
    let records = |n: usize| -> String {
        (0..n)
            .map(|i| format!("{}\n", serde_json::json!({ "text": text(i) })))
            .collect()
    };
    std::fs::write(inputs.join("a.jsonl"), records(200)).unwrap();
    // Not UTF-8: prepare stops at this input, after committing the first.
    let mut bad = records(200).into_bytes();
    bad[1000] = 0xff;
    std::fs::write(inputs.join("b.jsonl"), &bad).unwrap();
    let shards = dir.path().join("shards");
    let prepare = || {
        run(&[
            "prepare",
            s(&inputs),
            "--tokenizer",
            "gpt2",
            "--out",
            s(&shards),
            "--shard-tokens",
            "100",
        ])
    };
    assert_fails(&prepare(), &["b.jsonl"]);
    let manifest = std::fs::read_to_string(shards.join("manifest.json")).unwrap();
    assert!(manifest.contains("\"complete\": false"), "{manifest}");

    let out = dir.path().join("r");
    let unfinished = format!(
        "{} was not finished (1 of 2 inputs done); run the same `lmforge prepare` again to finish it",
        shards.display()
    );
    let mut args = vec!["train", "--data", s(&shards), "--out", s(&out)];
    args.extend(TINY);
    args.extend(["--max-iters", "1"]);
    assert_fails(&run(&args), &[&unfinished, "--allow-partial"]);
    assert!(!out.exists(), "nothing written");
    args.push("--allow-partial");
    let err = assert_ok(&run(&args));
    assert!(
        err.contains("warning") && err.contains("1 of 2 inputs done"),
        "{err}"
    );

    std::fs::write(inputs.join("b.jsonl"), records(200)).unwrap();
    assert_ok(&prepare());
    let manifest = std::fs::read_to_string(shards.join("manifest.json")).unwrap();
    assert!(manifest.contains("\"complete\": true"), "{manifest}");
    args.pop();
    args.push("--overwrite");
    assert_ok(&run(&args));
}

/// Item 2 for `prepare`: a second prepare into a directory being prepared
/// is refused. Item 10: `-q` prints no progress, and `--val-fraction 0`
/// gives no warning of the empty validation split it asks for.
#[test]
fn one_prepare_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let shards = dir.path().join("shards");
    let lock = lmforge::rundir::RunLock::acquire(&shards, "lmforge prepare").unwrap();
    let args = [
        "prepare",
        s(&data),
        "--tokenizer",
        "char",
        "--out",
        s(&shards),
        "-q",
        "--val-fraction",
        "0",
    ];
    let holder = format!(
        "is in use by process {} (lmforge prepare",
        std::process::id()
    );
    assert_fails(&run(&args), &[&holder]);
    drop(lock);
    let err = assert_ok(&run(&args));
    assert!(
        !err.contains("tokenizing") && !err.contains("warning"),
        "{err}"
    );
}
