//! Loading a byte-level BPE `tokenizer.json` made by Hugging Face tooling:
//! `tests/fixtures/tokenizer/hf_bpe_tokenizer.json` was trained and saved by
//! `tokenizers` and `hf_bpe_ids.json` holds the ids it gives
//! (`tools/tokenizer_fixtures.py`); lmforge must give the same ids.
//! Files with features lmforge does not implement are refused by name.

use lmforge::tokenizer;
use std::path::Path;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tokenizer");

#[test]
fn hf_trained_tokenizer_gives_hf_ids() {
    let tok = tokenizer::load(&Path::new(DIR).join("hf_bpe_tokenizer.json")).unwrap();
    assert_eq!(tok.kind(), "bpe");
    assert_eq!(tok.vocab_size(), 400);
    let ids: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(DIR).join("hf_bpe_ids.json")).unwrap(),
    )
    .unwrap();
    let cases = ids["cases"].as_array().unwrap();
    assert!(cases.len() > 30);
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        assert_eq!(tok.encode(text).unwrap(), want, "{text:?}");
        assert_eq!(tok.decode(&want), text);
    }
}

/// The fixture with one field changed, written to a temporary file, then loaded.
fn load_modified(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(DIR).join("hf_bpe_tokenizer.json")).unwrap(),
    )
    .unwrap();
    edit(&mut json);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    match tokenizer::load(&path) {
        Ok(_) => "loaded".into(),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unsupported_features_are_refused_by_name() {
    let err = load_modified(|j| j["normalizer"] = serde_json::json!({"type": "NFC"}));
    assert!(err.contains("normalizer"), "{err}");
    let err = load_modified(|j| j["pre_tokenizer"]["add_prefix_space"] = true.into());
    assert!(err.contains("unsupported pre_tokenizer"), "{err}");
    let err = load_modified(|j| j["model"]["continuing_subword_prefix"] = "##".into());
    assert!(err.contains("continuing_subword_prefix"), "{err}");
    let err = load_modified(|j| j["model"]["type"] = "Unigram".into());
    assert!(err.contains("Unigram"), "{err}");
    let err = load_modified(|j| j["model"]["merges"][0] = serde_json::json!(["Q", "nope"]));
    assert!(err.contains("merge 0"), "{err}");
    assert_eq!(load_modified(|_| {}), "loaded");
}
