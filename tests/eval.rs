//! `lmforge eval` against `transformers`: the tiny GPT-2 of
//! tests/fixtures/hf_gpt2/single, imported as a run, scores
//! tests/fixtures/eval/text.txt and choices.jsonl as the float64 reference
//! of `tools/eval_reference.py fixture` does (expected.json). Tolerance 1e-4
//! relative: an f32 forward against float64, summed over a few hundred tokens.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn lmforge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lmforge"))
        .args(args)
        .output()
        .unwrap()
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("eval/expected.json")).unwrap()).unwrap()
}

/// The fixture model imported into a fresh run directory.
fn imported_run() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let source = fixture("hf_gpt2/single");
    let out = lmforge(&[
        "import-hf",
        source.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, run.to_str().unwrap().to_string())
}

fn eval_json(run: &str, args: &[&str]) -> Value {
    let out = lmforge(&[&["eval", run, "--json", "--threads", "1"], args].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn assert_rel(got: &Value, want: &Value, what: &str) {
    let (g, w) = (got.as_f64().unwrap(), want.as_f64().unwrap());
    let rel = (g - w).abs() / w.abs();
    assert!(
        rel <= 1e-4,
        "{what}: lmforge {g}, transformers {w} (relative {rel:.1e})"
    );
}

#[test]
fn text_scores_equal_transformers_at_every_stride() {
    let (_dir, run) = imported_run();
    let text = fixture("eval/text.txt");
    let expected = expected();
    let ids: Vec<u32> = lmforge(&[
        "tokenizer",
        "encode",
        "--tokenizer",
        &format!("{run}/tokenizer.json"),
        text.to_str().unwrap(),
    ])
    .stdout
    .split(|b| b.is_ascii_whitespace())
    .filter(|w| !w.is_empty())
    .map(|w| std::str::from_utf8(w).unwrap().parse().unwrap())
    .collect();
    let want_ids: Vec<u32> = serde_json::from_value(expected["ids"].clone()).unwrap();
    assert_eq!(ids, want_ids, "the tokenizer gives transformers' ids");
    for want in expected["text"].as_array().unwrap() {
        let stride = want["stride"].to_string();
        let got = eval_json(
            &run,
            &["--text", text.to_str().unwrap(), "--stride", &stride],
        );
        for key in [
            "tokens",
            "scored_tokens",
            "windows",
            "scored_bytes",
            "stride",
        ] {
            assert_eq!(got[key], want[key], "stride {stride}: {key}");
        }
        for key in ["total_loss", "mean_loss", "perplexity", "bits_per_byte"] {
            assert_rel(&got[key], &want[key], &format!("stride {stride}: {key}"));
        }
    }
}

#[test]
fn multiple_choice_picks_what_transformers_picks() {
    let (_dir, run) = imported_run();
    let choices = fixture("eval/choices.jsonl");
    let want = &expected()["choices"];
    let got = eval_json(&run, &["--choices", choices.to_str().unwrap()]);
    assert_eq!(got["examples"], want["examples"]);
    for (g, w) in got["picks"]
        .as_array()
        .unwrap()
        .iter()
        .zip(want["picks"].as_array().unwrap())
    {
        for key in ["line", "label", "pred", "pred_norm", "tokens"] {
            assert_eq!(g[key], w[key], "line {}: {key}", w["line"]);
        }
        for (a, b) in g["losses"]
            .as_array()
            .unwrap()
            .iter()
            .zip(w["losses"].as_array().unwrap())
        {
            assert_rel(a, b, &format!("line {}: losses", w["line"]));
        }
    }
    assert_rel(&got["acc"], &want["acc"], "acc");
    assert_rel(&got["acc_norm"], &want["acc_norm"], "acc_norm");
    let limited = eval_json(
        &run,
        &["--choices", choices.to_str().unwrap(), "--limit", "2"],
    );
    assert_eq!(limited["picks"].as_array().unwrap().len(), 2);
}

#[test]
fn bad_input_gets_a_clear_error() {
    let (dir, run) = imported_run();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"context\": \"a\", \"choices\": [\"x\", \"y\"], \"label\": 0}\n{\"context\": \"a\", \"choices\": [\"x\"], \"label\": 0}\n").unwrap();
    let text = fixture("eval/text.txt");
    let one_token = dir.path().join("short.txt");
    std::fs::write(&one_token, "A").unwrap();
    for (args, why) in [
        (
            vec!["--choices", bad.to_str().unwrap()],
            "bad.jsonl: line 2: 1 choice(s)",
        ),
        (
            vec!["--text", text.to_str().unwrap(), "--stride", "0"],
            "--stride must be between 1 and the model's context (16)",
        ),
        (
            vec!["--text", text.to_str().unwrap(), "--stride", "17"],
            "--stride",
        ),
        (vec!["--text", one_token.to_str().unwrap()], "at least two"),
        (vec!["--text", "/nonexistent.txt"], "/nonexistent.txt"),
        (vec![], "--text"),
    ] {
        let out = lmforge(&[&["eval", run.as_str()], &args[..]].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(why),
            "{args:?}: {err}"
        );
    }
}

/// `train --eval-choices` logs `acc_norm` with every evaluation (the same
/// number `lmforge eval --choices` gives for the saved model at the last
/// one), and a bad questions file stops the run before it trains.
#[test]
fn training_logs_acc_norm_at_each_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let (run, questions) = (dir.path().join("run"), dir.path().join("q.jsonl"));
    std::fs::write(
        &questions,
        "{\"context\": \"First Citizen:\", \"choices\": [\" Before we proceed\", \" zzz\"], \"label\": 0}\n\
         {\"ctx\": \"Speak,\", \"endings\": [\"speak.\", \"All:\"], \"label\": 0}\n",
    )
    .unwrap();
    let data = fixture("eval/text.txt");
    let train = |questions: &Path| {
        let args = [
            "train",
            "--data",
            data.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
            "--overwrite",
            "--n-layer",
            "1",
            "--n-head",
            "2",
            "--n-embd",
            "16",
            "--block",
            "16",
            "--batch",
            "2",
            "--max-iters",
            "4",
            "--eval-interval",
            "2",
            "--eval-iters",
            "1",
            "--threads",
            "1",
            "--plot",
            "none",
            "-q",
            "--eval-choices",
            questions.to_str().unwrap(),
        ];
        lmforge(&args)
    };
    let out = train(&questions);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let evals: Vec<Value> = metrics
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["eval"] == true)
        .collect();
    assert_eq!(evals.len(), 3, "steps 0, 2 and 4");
    let acc: Vec<f64> = evals
        .iter()
        .map(|v| v["acc_norm"].as_f64().unwrap())
        .collect();
    assert!(acc.iter().all(|a| [0.0, 0.5, 1.0].contains(a)), "{acc:?}");
    let scored = eval_json(
        run.to_str().unwrap(),
        &["--choices", questions.to_str().unwrap()],
    );
    assert_eq!(scored["acc_norm"].as_f64().unwrap(), acc[2]);
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"context\": \"a\"}\n").unwrap();
    let out = train(&bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("bad.jsonl: line 1"),
        "{err}"
    );
}
