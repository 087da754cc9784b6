//! GPT-2 tokenizer parity with tiktoken: the ids in
//! `tests/fixtures/tokenizer/gpt2_parity.json` come from tiktoken's `gpt2`
//! encoding (`tools/tokenizer_fixtures.py`); every case must match exactly.
//! Plus round trips: decode(encode(s)) == s for arbitrary strings, and a save /
//! load through `tokenizer.json` that keeps the ids.

use lmforge::tokenizer::{self, BpeTokenizer, Tokenizer};
use proptest::prelude::*;
use std::sync::OnceLock;

fn gpt2() -> &'static BpeTokenizer {
    static TOK: OnceLock<BpeTokenizer> = OnceLock::new();
    TOK.get_or_init(|| tokenizer::gpt2().unwrap())
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    text: String,
    ordinary: Vec<u32>,
    with_special: Option<Vec<u32>>,
}

fn cases() -> Vec<Case> {
    #[derive(serde::Deserialize)]
    struct Fixture {
        cases: Vec<Case>,
    }
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/tokenizer/gpt2_parity.json"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let fixture: Fixture = serde_json::from_str(&text).unwrap();
    assert!(fixture.cases.len() > 200, "fixture has its cases");
    fixture.cases
}

/// Where two id lists first differ, for a readable failure.
fn first_difference(got: &[u32], want: &[u32]) -> String {
    let i = got.iter().zip(want).take_while(|(a, b)| a == b).count();
    format!(
        "first difference at {i}: got {:?}, want {:?} (lengths {} and {})",
        &got[i..(i + 5).min(got.len())],
        &want[i..(i + 5).min(want.len())],
        got.len(),
        want.len()
    )
}

#[test]
fn ids_equal_tiktoken_on_every_fixture() {
    let tok = gpt2();
    let mut failures = Vec::new();
    for case in cases() {
        let want_special = case.with_special.as_ref().unwrap_or(&case.ordinary);
        for (what, got, want) in [
            ("ordinary", tok.encode_ordinary(&case.text), &case.ordinary),
            (
                "with special",
                tok.encode(&case.text).unwrap(),
                want_special,
            ),
        ] {
            if &got != want {
                failures.push(format!(
                    "{} ({what}): {}",
                    case.name,
                    first_difference(&got, want)
                ));
            }
        }
        assert_eq!(
            tok.decode(&case.ordinary),
            case.text,
            "{}: decode",
            case.name
        );
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn batch_and_parallel_encoding_equal_serial() {
    let tok = gpt2();
    let cases = cases();
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let batch = tok.encode_batch(&texts);
    for (case, ids) in cases.iter().zip(&batch) {
        assert_eq!(
            ids,
            case.with_special.as_ref().unwrap_or(&case.ordinary),
            "{}",
            case.name
        );
    }
    let shakespeare = &cases[0];
    assert_eq!(
        tok.encode_parallel(&shakespeare.text, 8),
        shakespeare.ordinary
    );
}

#[test]
fn saved_gpt2_loads_back_with_the_same_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    gpt2().save(&path).unwrap();
    let loaded = tokenizer::load(&path).unwrap();
    assert_eq!(loaded.kind(), "bpe");
    assert_eq!(loaded.vocab_size(), 50257);
    for case in cases().iter().take(60) {
        let want = case.with_special.as_ref().unwrap_or(&case.ordinary);
        assert_eq!(&loaded.encode(&case.text).unwrap(), want, "{}", case.name);
    }
}

fn spec(text: &str) -> tokenizer::TokenizerSpec {
    text.parse().unwrap()
}

#[test]
fn specs_name_gpt2_and_refuses_char() {
    assert_eq!(
        tokenizer::TokenizerSpec::Gpt2.load().unwrap().kind(),
        "gpt2"
    );
    let err = spec("char").load().err().unwrap().to_string();
    assert!(err.contains("built from the training text"), "{err}");
    // A path: load tells a char tokenizer.json from a BPE one.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("char.json");
    tokenizer::CharTokenizer::from_text("abc")
        .unwrap()
        .save(&path)
        .unwrap();
    let char_tok = spec(path.to_str().unwrap()).load().unwrap();
    assert_eq!((char_tok.kind(), char_tok.vocab_size()), ("char", 3));
    let err = spec("/no/such/tokenizer.json")
        .load()
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("/no/such/tokenizer.json"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]
    #[test]
    fn decode_inverts_encode(text in any::<String>()) {
        let tok = gpt2();
        prop_assert_eq!(tok.decode_bytes(&tok.encode(&text).unwrap()), text.as_bytes());
        prop_assert_eq!(tok.decode_bytes(&tok.encode_ordinary(&text)), text.as_bytes());
    }

    #[test]
    fn decode_inverts_encode_on_wordy_text(text in "([a-zA-Z' ]{0,12}[ \n\t0-9.!,]{0,4}(<\\|endoftext\\|>)?){0,20}") {
        let tok = gpt2();
        prop_assert_eq!(tok.decode(&tok.encode(&text).unwrap()), text);
    }
}
