//! The `tokenizer.json` kinds Llama-family models ship, loaded by
//! `tokenizer::load` and run through Hugging Face's `tokenizers` crate, must
//! give the ids and texts Python `tokenizers` gives. The fixtures in
//! `tests/fixtures/tokenizer/hf/` were trained offline and recorded by
//! `tools/hf_tokenizer_fixtures.py`: Llama-3- and Qwen2-style byte-level BPE,
//! Llama-2- and Mistral-style SentencePiece BPE with byte fallback, added
//! tokens special and not; a Unigram and a WordPiece one as well, and a
//! GPT-2-style byte-level BPE trained without the full byte alphabet (which
//! lmforge's own fast path cannot run, so `tokenizers` does).

use lmforge::error::Error;
use lmforge::tokenizer::{self, Tokenizer};
use serde_json::Value;
use std::path::{Path, PathBuf};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tokenizer/hf");
const KINDS: [&str; 4] = ["llama3_bpe", "qwen2_bpe", "llama2_spm", "mistral_spm"];

fn fixture(name: &str) -> PathBuf {
    Path::new(DIR).join(format!("{name}.json"))
}

fn cases(name: &str) -> Value {
    let path = Path::new(DIR).join(format!("{name}.cases.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(value: &Value) -> Vec<u32> {
    serde_json::from_value(value.clone()).unwrap()
}

/// Every recorded case of `name`: the ids, the ids with specials as plain
/// text, the decoded text and the streamed bytes all equal Python's.
fn assert_matches_hf(tok: &dyn Tokenizer, name: &str) {
    let record = cases(name);
    let cases = record["cases"].as_array().unwrap();
    assert!(cases.len() > 20, "{name}");
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want = ids(&case["ids"]);
        assert_eq!(tok.encode(text).unwrap(), want, "{name}: encode {text:?}");
        assert_eq!(
            tok.encode_ordinary(text).unwrap(),
            ids(&case["ordinary"]),
            "{name}: encode_ordinary {text:?}"
        );
        assert_eq!(
            tok.decode(&want),
            case["decoded"],
            "{name}: decode {text:?}"
        );
        let streamed: Vec<u8> = want
            .iter()
            .flat_map(|&id| tok.decode_bytes(&[id]))
            .collect();
        let stream = case["stream"].as_str().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&streamed),
            stream,
            "{name}: tokens one at a time {text:?}"
        );
        // Python's text is lossy where the ids stand for a cut character (a
        // vocabulary without every byte drops the rest of it).
        assert_eq!(
            String::from_utf8_lossy(&tok.decode_bytes(&want)),
            stream,
            "{name}: {text:?}"
        );
    }
}

#[test]
fn every_kind_gives_the_ids_and_texts_of_hf_tokenizers() {
    let kinds = KINDS.map(|name| (name, "hf-bpe"));
    let others = [
        ("t5_unigram", "hf-unigram"),
        ("bert_wordpiece", "hf-wordpiece"),
        ("bytelevel_partial", "hf-bpe"),
    ];
    for (name, kind) in kinds.into_iter().chain(others) {
        let tok = tokenizer::load(&fixture(name)).unwrap();
        assert_eq!(tok.kind(), kind, "{name}");
        assert_eq!(
            tok.vocab_size() as u64,
            cases(name)["vocab_size"].as_u64().unwrap(),
            "{name}"
        );
        assert_matches_hf(tok.as_ref(), name);
    }
}

#[test]
fn special_and_plain_added_tokens_are_told_apart() {
    for name in KINDS {
        let tok = tokenizer::load(&fixture(name)).unwrap();
        let record = cases(name);
        let specials = record["specials"].as_object().unwrap();
        assert!(!specials.is_empty());
        for (content, id) in specials {
            let id = id.as_u64().unwrap() as u32;
            assert_eq!(tok.special_token(content), Some(id), "{name}: {content}");
            assert_eq!(tok.encode(content).unwrap(), [id], "{name}: {content}");
            let ordinary = tok.encode_ordinary(&format!("a{content}b")).unwrap();
            assert!(
                !ordinary.contains(&id),
                "{name}: {content} as text gave {ordinary:?}"
            );
        }
        // Added tokens that are not special are vocabulary words: matched in
        // any text, but not control tokens.
        for (content, id) in record["plain_added"].as_object().unwrap() {
            let id = id.as_u64().unwrap() as u32;
            assert_eq!(tok.special_token(content), None, "{name}: {content}");
            assert!(
                tok.encode_ordinary(&format!("x{content}y"))
                    .unwrap()
                    .contains(&id)
            );
        }
    }
    let plain = |name: &str| cases(name)["plain_added"].as_object().unwrap().len();
    assert_eq!(plain("qwen2_bpe"), 2);
    assert_eq!(plain("mistral_spm"), 1);
}

#[test]
fn encode_adds_no_bos_although_the_post_processor_would() {
    for (name, bos) in [("llama3_bpe", "<|begin_of_text|>"), ("llama2_spm", "<s>")] {
        let json: Value =
            serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap();
        assert_eq!(
            json["post_processor"]["type"], "TemplateProcessing",
            "{name}"
        );
        let tok = tokenizer::load(&fixture(name)).unwrap();
        let bos = tok.special_token(bos).unwrap();
        assert!(!tok.encode("Hello world").unwrap().contains(&bos), "{name}");
    }
}

#[test]
fn eot_token_is_the_files_end_of_text_token() {
    for (name, eot) in [
        ("llama3_bpe", "<|end_of_text|>"),
        ("qwen2_bpe", "<|endoftext|>"),
        ("llama2_spm", "</s>"),
        ("mistral_spm", "</s>"),
    ] {
        let tok = tokenizer::load(&fixture(name)).unwrap();
        assert_eq!(tok.eot_token(), tok.special_token(eot), "{name}");
        assert!(tok.eot_token().is_some(), "{name}");
    }
}

#[test]
fn a_character_cut_between_tokens_streams_as_its_bytes() {
    // The emoji is not in any vocabulary: byte-level BPE writes it as byte
    // tokens, SentencePiece as <0xNN> fallback tokens.
    let emoji = "🎉";
    for name in KINDS {
        let tok = tokenizer::load(&fixture(name)).unwrap();
        let ids = tok.encode_ordinary(&format!("x{emoji}")).unwrap();
        let pieces: Vec<Vec<u8>> = ids.iter().map(|&id| tok.decode_bytes(&[id])).collect();
        let cut = pieces
            .iter()
            .filter(|p| std::str::from_utf8(p).is_err())
            .count();
        assert!(cut >= 2, "{name}: {pieces:?} does not cut the emoji");
        let joined = pieces.concat();
        assert!(joined.ends_with(emoji.as_bytes()), "{name}: {joined:?}");
    }
}

#[test]
fn saved_tokenizers_load_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    for name in KINDS {
        let tok = tokenizer::load(&fixture(name)).unwrap();
        let path = dir.path().join(format!("{name}.json"));
        tok.save(&path).unwrap();
        let back = tokenizer::load(&path).unwrap();
        assert_eq!(back.kind(), tok.kind());
        assert_eq!(back.vocab_size(), tok.vocab_size());
        assert_eq!(back.eot_token(), tok.eot_token());
        assert_matches_hf(back.as_ref(), name);
    }
}

#[test]
fn with_specials_appends_the_missing_ones() {
    let dir = tempfile::tempdir().unwrap();
    for name in KINDS {
        let tok = tokenizer::load(&fixture(name)).unwrap();
        let n = tok.vocab_size() as u32;
        let eot = tok.eot_token().unwrap();
        let eot_name = tok.decode(&[eot]);
        let more = tok
            .with_specials(&["<|user|>", &eot_name, "<|assistant|>"])
            .unwrap();
        assert_eq!(more.vocab_size() as u32, n + 2, "{name}");
        assert_eq!(more.special_token("<|user|>"), Some(n), "{name}");
        assert_eq!(more.special_token("<|assistant|>"), Some(n + 1), "{name}");
        assert_eq!(more.eot_token(), Some(eot), "{name}");
        let ids = more.encode("hi<|user|>yo<|assistant|>").unwrap();
        assert!(
            ids.contains(&n) && ids.contains(&(n + 1)),
            "{name}: {ids:?}"
        );
        // (Llama 2's layout puts a `▁` before each text after a special.)
        let text = more.decode(&ids);
        assert!(text.starts_with("hi<|user|>"), "{name}: {text:?}");
        assert!(text.ends_with("yo<|assistant|>"), "{name}: {text:?}");
        let ordinary = more.encode_ordinary("<|user|>").unwrap();
        assert!(!ordinary.contains(&n), "{name}: {ordinary:?}");
        assert_eq!(more.decode_bytes(&[n]), b"<|user|>");
        // The old ids are untouched, and the new tokens survive a save.
        assert_eq!(
            more.encode("Hello world").unwrap(),
            tok.encode("Hello world").unwrap()
        );
        let path = dir.path().join(format!("{name}.json"));
        more.save(&path).unwrap();
        let back = tokenizer::load(&path).unwrap();
        assert_eq!(back.special_token("<|assistant|>"), Some(n + 1), "{name}");
        assert_eq!(back.encode("hi<|user|>yo<|assistant|>").unwrap(), ids);
        assert!(more.with_specials(&[""]).is_err());
    }
}

/// The fixture `name` with an edit, written to a temporary file and loaded:
/// the format error's text (which names the file), or "loaded".
fn load_edited(name: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut json: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap();
    edit(&mut json);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken_tokenizer.json");
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    match tokenizer::load(&path) {
        Ok(tok) => format!("loaded {}", tok.kind()),
        Err(e @ Error::Format { .. }) => e.to_string(),
        Err(e) => panic!("not a format error: {e}"),
    }
}

/// A change to a fixture.
type Edit = fn(&mut Value);

#[test]
fn malformed_files_are_format_errors_naming_the_file() {
    use serde_json::json;
    let edits: [(&str, Edit, &str); 7] = [
        (
            "llama2_spm",
            |j| j["model"]["merges"][0] = json!(["▁", "nope"]),
            "nope",
        ),
        (
            "llama2_spm",
            |j| j["model"]["vocab"] = json!([1, 2]),
            "Hugging Face tokenizers cannot read it",
        ),
        (
            "llama2_spm",
            |j| j["decoder"] = json!({"type": "Nope"}),
            "Hugging Face tokenizers cannot read it",
        ),
        (
            "llama2_spm",
            |j| j["model"]["vocab"]["▁t"] = 5000.into(),
            "id 5000",
        ),
        (
            "mistral_spm",
            |j| j["added_tokens"][3]["id"] = 9999.into(),
            "9999",
        ),
        (
            "qwen2_bpe",
            |j| j["normalizer"] = json!({"type": "Nope"}),
            "Hugging Face tokenizers cannot read it",
        ),
        (
            "llama3_bpe",
            |j| j["model"]["type"] = "Unigram".into(),
            "Hugging Face tokenizers cannot read it",
        ),
    ];
    for (name, edit, want) in edits {
        let err = load_edited(name, edit);
        assert!(err.contains("broken_tokenizer.json"), "{err}");
        assert!(err.contains(want), "{name}: {err:?} lacks {want:?}");
    }
    // A GPT-2-style field gone wrong in an otherwise Hugging Face-only file
    // gives both readers' reasons.
    let err = load_edited("llama3_bpe", |j| j["model"]["ignore_merges"] = "yes".into());
    assert!(
        err.contains("own byte-level BPE") && err.contains("model: invalid type: string \"yes\""),
        "{err}"
    );
    assert_eq!(load_edited("llama3_bpe", |_| {}), "loaded hf-bpe");
}

#[test]
fn prepare_writes_each_document_as_eot_then_its_ids() {
    use lmforge::data::TokenSource;
    use lmforge::data::prepare::{PrepareOptions, prepare};
    use lmforge::data::shards::ShardSet;
    use lmforge::tokenizer::TokenizerSpec;
    let dir = tempfile::tempdir().unwrap();
    let docs = [
        "First Citizen:\nSpeak, speak.\n",
        "Ünïcødé and 🎉 too",
        "<s> typed",
    ];
    let input = dir.path().join("docs.jsonl");
    let lines: Vec<String> = docs
        .iter()
        .map(|d| serde_json::json!({ "text": d }).to_string())
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let out = dir.path().join("shards");
    let spec = TokenizerSpec::File(fixture("llama2_spm"));
    let mut opts = PrepareOptions::new(vec![input.display().to_string()], spec, &out);
    opts.val_fraction = 0.0;
    opts.threads = 2;
    assert_eq!(prepare(&opts).unwrap().documents, 3);
    let set = ShardSet::open(&out).unwrap();
    let mut got = vec![0; set.train().len()];
    set.train().read(0, &mut got);
    let tok = tokenizer::load(&fixture("llama2_spm")).unwrap();
    let eot = tok.eot_token().unwrap();
    let want: Vec<u32> = docs
        .iter()
        .flat_map(|d| std::iter::once(eot).chain(tok.encode(d).unwrap()))
        .collect();
    assert_eq!(got, want);
    let saved = tokenizer::load(set.tokenizer_path().unwrap()).unwrap();
    assert_eq!(saved.kind(), "hf-bpe");
    assert_eq!(saved.encode(docs[1]).unwrap(), tok.encode(docs[1]).unwrap());
}

#[test]
fn train_and_sample_with_a_sentencepiece_tokenizer() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("corpus.txt");
    let text: String = (0..400)
        .map(|i| format!("line {i}: the quick brown fox jumps over the lazy dog.\n"))
        .collect();
    std::fs::write(&data, text).unwrap();
    let out = dir.path().join("run");
    let tokenizer_path = fixture("llama2_spm");
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_lmforge"))
            .args(args)
            .output()
            .unwrap()
    };
    #[rustfmt::skip]
    let trained = run(&[
        "train", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(),
        "--tokenizer", tokenizer_path.to_str().unwrap(), "--max-iters", "3",
        "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block", "16", "--batch", "2",
        "--eval-iters", "1", "--eval-interval", "3", "--threads", "2", "-q",
    ]);
    let stderr = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(trained.status.success(), "{}", stderr(&trained));
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["vocab_size"], 700);
    assert_eq!(config["eos_token_id"], 2, "</s>");
    assert_eq!(
        tokenizer::load(&out.join("tokenizer.json")).unwrap().kind(),
        "hf-bpe"
    );
    #[rustfmt::skip]
    let sampled = run(&[
        "sample", out.to_str().unwrap(), "--prompt", "ROMEO: é 🎉", "--max-new-tokens", "5",
    ]);
    assert!(sampled.status.success(), "{}", stderr(&sampled));
    let printed = String::from_utf8_lossy(&sampled.stdout);
    assert!(printed.contains("ROMEO: é 🎉"), "{printed:?}");
}

#[test]
fn a_llama_folder_with_a_hugging_face_only_tokenizer_imports_and_exports() {
    // The Llama fixture folder (vocabulary 400) with its tokenizer given an
    // NFC normalizer, which only `tokenizers` runs.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("llama");
    std::fs::create_dir(&folder).unwrap();
    for file in ["config.json", "generation_config.json", "model.safetensors"] {
        std::fs::copy(root.join("hf_llama/llama").join(file), folder.join(file)).unwrap();
    }
    let mut json: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("tokenizer/hf_bpe_tokenizer.json")).unwrap(),
    )
    .unwrap();
    json["normalizer"] = serde_json::json!({"type": "NFC"});
    std::fs::write(folder.join("tokenizer.json"), json.to_string()).unwrap();
    let run = dir.path().join("run");
    let imported = lmforge::hf::import(folder.to_str().unwrap(), &run).unwrap();
    assert_eq!(imported.tokenizer.kind(), "hf-bpe");
    let own = tokenizer::load(&root.join("tokenizer/hf_bpe_tokenizer.json")).unwrap();
    let text = "First Citizen: cafe\u{301} 🎉<|endoftext|>";
    assert_eq!(
        imported
            .tokenizer
            .encode("First Citizen: <|endoftext|>")
            .unwrap(),
        own.encode("First Citizen: <|endoftext|>").unwrap()
    );
    // NFC composes e + U+0301 into é before the merges.
    assert_eq!(
        imported.tokenizer.encode(text).unwrap(),
        own.encode(&text.replace("e\u{301}", "é")).unwrap()
    );
    let saved = tokenizer::load(&run.join("tokenizer.json")).unwrap();
    assert_eq!(saved.kind(), "hf-bpe");
    let exported = dir.path().join("exported");
    lmforge::hf::export(&run, &exported).unwrap();
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(exported.join("tokenizer_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["tokenizer_class"], "PreTrainedTokenizerFast");
    assert_eq!(config["eos_token"], "<|endoftext|>");
}

#[test]
fn a_llama_folder_with_a_byte_level_tokenizer_lacking_bytes_imports() {
    // `ByteLevelBPETokenizer().train(...)` without the initial alphabet: no
    // token for byte 0x00, so the fast path hands the file to `tokenizers`.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("llama");
    std::fs::create_dir(&folder).unwrap();
    for file in ["config.json", "generation_config.json", "model.safetensors"] {
        std::fs::copy(root.join("hf_llama/llama").join(file), folder.join(file)).unwrap();
    }
    std::fs::copy(fixture("bytelevel_partial"), folder.join("tokenizer.json")).unwrap();
    let run = dir.path().join("run");
    let imported = lmforge::hf::import(folder.to_str().unwrap(), &run).unwrap();
    assert_eq!(imported.tokenizer.kind(), "hf-bpe");
    assert_eq!(imported.tokenizer.eot_token(), Some(0));
    let saved = tokenizer::load(&run.join("tokenizer.json")).unwrap();
    for case in cases("bytelevel_partial")["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(saved.encode(text).unwrap(), ids(&case["ids"]), "{text:?}");
    }
    let own = lmforge::tokenizer::BpeTokenizer::load(&fixture("bytelevel_partial"))
        .unwrap_err()
        .to_string();
    assert!(own.contains("byte 0x00 has no token"), "{own}");
}

#[test]
fn parallel_encoding_equals_serial() {
    use lmforge::tokenizer::HfTokenizer;
    let text = "First Citizen:\nBefore we proceed, hear me.\n\nAll:\nSpeak, speak.\n  x\ny \n z.\n"
        .repeat(40)
        + "<|endoftext|>café 🎉\n中文\n<|im_end|>\n12345\n";
    for (name, parallel) in [
        ("llama3_bpe", true),
        ("qwen2_bpe", true),
        ("llama2_spm", false),
        ("mistral_spm", false),
    ] {
        let tok = HfTokenizer::load(&fixture(name)).unwrap();
        assert_eq!(tok.encodes_in_parallel(), parallel, "{name}");
        let serial = tok.encode(&text).unwrap();
        for chunks in [2, 3, 7, 64] {
            assert_eq!(
                tok.encode_parallel(&text, chunks).unwrap(),
                serial,
                "{name}: {chunks} chunks"
            );
        }
    }
}
