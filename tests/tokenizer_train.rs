//! BPE training end to end: deterministic, round-trips, survives save/load
//! (tokenizer.json and tiktoken ranks), and the CLI trains/encodes/decodes.

use lmforge::tokenizer::{self, Pattern, Tokenizer, train};
use std::path::Path;
use std::process::Command;

fn corpus() -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tokenizer/gpt2_parity.json"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    json["cases"][0]["text"].as_str().unwrap().to_string()
}

fn config(pattern: Pattern) -> train::TrainConfig {
    train::TrainConfig {
        vocab_size: 600,
        pattern,
        specials: vec!["<|endoftext|>".into(), "<|pad|>".into()],
        skip_invalid_utf8: false,
    }
}

#[test]
fn training_is_deterministic_and_round_trips() {
    let text = corpus();
    for pattern in [Pattern::Gpt2, Pattern::Gpt4] {
        let (a, report) = train::train_text(&text, &config(pattern)).unwrap();
        let (b, _) = train::train_text(&text, &config(pattern)).unwrap();
        assert_eq!(
            a.to_hf_json().unwrap(),
            b.to_hf_json().unwrap(),
            "{pattern:?}"
        );
        assert_eq!(a.vocab_size(), 600);
        assert_eq!(report.merges, 600 - 256 - 2);
        assert_eq!(a.special_id("<|pad|>"), Some(599));

        let ids = a.encode(&text).unwrap();
        assert!(
            ids.len() * 2 < text.len(),
            "600 tokens compress the training text"
        );
        assert_eq!(a.decode(&ids), text);
        let unseen = "Ünïcødé 🎉 <|endoftext|> 中文\r\n\t  x<|pad|>";
        let ids = a.encode(unseen).unwrap();
        assert!(ids.contains(&598) && ids.contains(&599), "{ids:?}");
        assert_eq!(a.decode(&ids), unseen);
    }
}

#[test]
fn streaming_files_equals_training_in_memory() {
    let text = corpus();
    let dir = tempfile::tempdir().unwrap();
    // Cut after a newline between two non-blank characters: no word spans
    // such a cut, so two files give the same counts as one text.
    let bytes = text.as_bytes();
    let cut = (text.len() / 2..text.len() - 1)
        .find(|&i| {
            bytes[i] == b'\n'
                && !bytes[i - 1].is_ascii_whitespace()
                && !bytes[i + 1].is_ascii_whitespace()
        })
        .unwrap()
        + 1;
    let (half_a, half_b) = text.split_at(cut);
    let (a, b) = (dir.path().join("a.txt"), dir.path().join("b.txt"));
    std::fs::write(&a, half_a).unwrap();
    std::fs::write(&b, half_b).unwrap();
    let cfg = config(Pattern::Gpt2);
    let (from_files, report) = train::train_files(&[a, b], &cfg).unwrap();
    assert_eq!(report.corpus_bytes, text.len() as u64);
    let (in_memory, _) = train::train_text(&text, &cfg).unwrap();
    assert_eq!(
        from_files.to_hf_json().unwrap(),
        in_memory.to_hf_json().unwrap()
    );
}

#[test]
fn saved_tokenizer_loads_with_the_same_ids() {
    let text = corpus();
    let dir = tempfile::tempdir().unwrap();
    for pattern in [Pattern::Gpt2, Pattern::Gpt4] {
        let (tok, _) = train::train_text(&text, &config(pattern)).unwrap();
        let path = dir.path().join("tok.json");
        tok.save(&path).unwrap();
        let loaded = tokenizer::load(&path).unwrap();
        assert_eq!(loaded.kind(), "bpe");
        assert_eq!(loaded.encode(&text).unwrap(), tok.encode(&text).unwrap());

        // tiktoken ranks: the ordinary tokens, rank = id.
        let ranks_path = dir.path().join("tok.tiktoken");
        tok.save_tiktoken(&ranks_path).unwrap();
        let ranks = tokenizer::bpe::parse_tiktoken(
            &std::fs::read_to_string(&ranks_path).unwrap(),
            &ranks_path,
        )
        .unwrap();
        assert_eq!(ranks.len(), 598);
        for (id, bytes) in ranks.iter().enumerate() {
            assert_eq!(&tok.decode_bytes(&[id as u32]), bytes);
        }
    }
}

#[test]
fn cli_trains_encodes_and_decodes() {
    let exe = env!("CARGO_BIN_EXE_lmforge");
    let dir = tempfile::tempdir().unwrap();
    let corpus_path = dir.path().join("corpus.txt");
    std::fs::write(&corpus_path, corpus()).unwrap();
    let out = dir.path().join("tok.json");
    let status = Command::new(exe)
        .args([
            "tokenizer",
            "train",
            "--vocab-size",
            "500",
            "--pattern",
            "gpt4",
            "--special",
            "<|endoftext|>",
            "--out",
        ])
        .arg(&out)
        .arg(&corpus_path)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(out.with_extension("tiktoken").exists());

    let sample = dir.path().join("sample.txt");
    std::fs::write(
        &sample,
        "First Citizen:\nBefore we proceed<|endoftext|> 🎉\n",
    )
    .unwrap();
    for spec in ["gpt2", out.to_str().unwrap()] {
        let encoded = Command::new(exe)
            .args(["tokenizer", "encode", "--threads", "2", "--tokenizer", spec])
            .arg(&sample)
            .output()
            .unwrap();
        assert!(
            encoded.status.success(),
            "{}",
            String::from_utf8_lossy(&encoded.stderr)
        );
        assert!(String::from_utf8_lossy(&encoded.stderr).contains("bytes/token"));
        let ids = dir.path().join("ids.txt");
        std::fs::write(&ids, &encoded.stdout).unwrap();
        let decoded = Command::new(exe)
            .args(["tokenizer", "decode", "--tokenizer", spec])
            .arg(&ids)
            .output()
            .unwrap();
        assert!(
            decoded.status.success(),
            "{}",
            String::from_utf8_lossy(&decoded.stderr)
        );
        assert_eq!(decoded.stdout, std::fs::read(&sample).unwrap(), "{spec}");
    }

    let too_small = Command::new(exe)
        .args(["tokenizer", "train", "--vocab-size", "100", "--out"])
        .arg(&out)
        .arg(&corpus_path)
        .output()
        .unwrap();
    assert!(!too_small.status.success());
    assert!(String::from_utf8_lossy(&too_small.stderr).contains("smaller than 256"));
}

/// `tokenizer train` and `tokenizer encode` read through the document reader:
/// a BOM and CRLF line endings are normalised away, as `prepare` and `train`
/// do, from a file, a compressed file or stdin.
#[test]
fn cli_train_and_encode_see_normalised_text() {
    let exe = env!("CARGO_BIN_EXE_lmforge");
    let dir = tempfile::tempdir().unwrap();
    let text = corpus();
    let lf = dir.path().join("lf.txt");
    std::fs::write(&lf, &text).unwrap();
    let crlf = dir.path().join("crlf.txt.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(
        &mut gz,
        format!("\u{feff}{}", text.replace('\n', "\r\n")).as_bytes(),
    )
    .unwrap();
    std::fs::write(&crlf, gz.finish().unwrap()).unwrap();
    let run = |args: &[&str], stdin: Option<&Path>| {
        let mut cmd = Command::new(exe);
        cmd.args(args);
        if let Some(path) = stdin {
            cmd.stdin(std::fs::File::open(path).unwrap());
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let path = |p: &Path| p.to_str().unwrap().to_string();
    let (tok_lf, tok_crlf) = (dir.path().join("lf.json"), dir.path().join("crlf.json"));
    for (input, out) in [(&lf, &tok_lf), (&crlf, &tok_crlf)] {
        run(
            &[
                "tokenizer",
                "train",
                "--vocab-size",
                "400",
                "--out",
                &path(out),
                &path(input),
            ],
            None,
        );
    }
    assert_eq!(
        std::fs::read(&tok_lf).unwrap(),
        std::fs::read(&tok_crlf).unwrap()
    );

    let crlf_plain = dir.path().join("crlf.txt");
    std::fs::write(
        &crlf_plain,
        format!("\u{feff}{}", text.replace('\n', "\r\n")),
    )
    .unwrap();
    for spec in ["gpt2", "char", tok_lf.to_str().unwrap()] {
        let want = run(
            &["tokenizer", "encode", "--tokenizer", spec, &path(&lf)],
            None,
        );
        let from_file = run(
            &["tokenizer", "encode", "--tokenizer", spec, &path(&crlf)],
            None,
        );
        let from_stdin = run(
            &[
                "tokenizer",
                "encode",
                "--tokenizer",
                spec,
                "--threads",
                "2",
                "-",
            ],
            Some(&crlf_plain),
        );
        assert!(want == from_file && want == from_stdin, "{spec}");
    }
    let saved = dir.path().join("chars.json");
    run(
        &[
            "tokenizer",
            "encode",
            "--tokenizer",
            "char",
            "--save-tokenizer",
            &path(&saved),
            &path(&crlf),
        ],
        None,
    );
    let vocab = std::fs::read_to_string(&saved).unwrap();
    assert!(
        !vocab.contains("\\r") && !vocab.contains("\\ufeff"),
        "{vocab}"
    );
}
