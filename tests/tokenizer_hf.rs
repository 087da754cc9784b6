//! Loading a byte-level BPE `tokenizer.json` made by Hugging Face tooling:
//! `tests/fixtures/tokenizer/hf_bpe_tokenizer.json` was trained and saved by
//! `tokenizers` and `hf_bpe_ids.json` holds the ids it gives
//! (`tools/tokenizer_fixtures.py`); lmforge must give the same ids.
//! lmforge's own BPE refuses files with features it does not implement by
//! name; `tokenizer::load` gives those to Hugging Face's `tokenizers`
//! (`tests/tokenizer_hf_kinds.rs` checks that path).

use lmforge::tokenizer::{self, BpeTokenizer, Tokenizer};
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

/// The fixture with one field changed, written to a temporary file, then
/// read by `read` (lmforge's own BPE reader or `tokenizer::load`): the kind
/// it loaded as, or the error.
fn load_modified(
    edit: impl FnOnce(&mut serde_json::Value),
    read: fn(&Path) -> lmforge::error::Result<String>,
) -> String {
    let mut json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(DIR).join("hf_bpe_tokenizer.json")).unwrap(),
    )
    .unwrap();
    edit(&mut json);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    read(&path).unwrap_or_else(|e| e.to_string())
}

fn own(path: &Path) -> lmforge::error::Result<String> {
    BpeTokenizer::load(path).map(|t| format!("loaded {}", t.kind()))
}

fn any(path: &Path) -> lmforge::error::Result<String> {
    tokenizer::load(path).map(|t| format!("loaded {}", t.kind()))
}

/// A change to the fixture.
type Edit = fn(&mut serde_json::Value);

#[test]
fn unsupported_features_are_refused_by_name() {
    use serde_json::json;
    let edits: [(Edit, &str); 6] = [
        (|j| j["normalizer"] = json!({"type": "NFC"}), "normalizer"),
        (
            |j| j["pre_tokenizer"]["add_prefix_space"] = true.into(),
            "unsupported pre_tokenizer",
        ),
        (
            |j| j["model"]["byte_fallback"] = true.into(),
            "byte_fallback",
        ),
        (
            |j| j["decoder"] = json!({"type": "Fuse"}),
            "unsupported decoder",
        ),
        (
            |j| j["added_tokens"][0]["special"] = false.into(),
            "not special",
        ),
        (|j| j["added_tokens"][0]["lstrip"] = true.into(), "lstrip"),
    ];
    for (edit, want) in edits {
        let err = load_modified(edit, own);
        assert!(err.contains(want), "{err}");
        // `tokenizer::load` runs such files with Hugging Face's tokenizers.
        assert_eq!(load_modified(edit, any), "loaded hf-bpe", "{want}");
    }
    // A subword prefix the merges do not use is refused by both.
    let prefix = |j: &mut serde_json::Value| j["model"]["continuing_subword_prefix"] = "##".into();
    assert!(load_modified(prefix, own).contains("continuing_subword_prefix is not supported"));
    let err = load_modified(prefix, any);
    assert!(
        err.contains("does not start with the continuing_subword_prefix"),
        "{err}"
    );
    // A Unigram model is Hugging Face's to read; this one has a BPE's vocabulary.
    let err = load_modified(|j| j["model"]["type"] = "Unigram".into(), any);
    assert!(
        err.contains("Hugging Face tokenizers cannot read it"),
        "{err}"
    );
    let err = load_modified(|j| j["model"]["merges"][0] = json!(["Q", "nope"]), any);
    assert!(err.contains("merge 0"), "{err}");
    assert_eq!(load_modified(|_| {}, own), "loaded bpe");
    assert_eq!(load_modified(|_| {}, any), "loaded bpe");
}
