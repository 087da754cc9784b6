//! A `tokenizer.json` is untrusted input (a download, a hand edit, a corrupted
//! disk): loading a hostile one must give an error that names the entry at
//! fault, never a panic, an abort or an allocation sized by a number in the
//! file. Focused tests cover each hostile case; a property test feeds randomly
//! mutated BPE and character tokenizer files to `tokenizer::load`, both those
//! lmforge's own BPE reads and those it hands to Hugging Face's `tokenizers`
//! (SentencePiece-style, Qwen2-style).

use lmforge::error::Error;
use lmforge::tokenizer::{self, BpeTokenizer, CharTokenizer, Pattern, Tokenizer};
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::OnceLock;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/tokenizer/hf_bpe_tokenizer.json"
);

/// The committed Hugging Face BPE tokenizer (400 ids, `<|endoftext|>` = 0 in
/// both `model.vocab` and `added_tokens`; "A" = 33, "B" = 34, "Ġwh" = 399).
fn hf_fixture() -> &'static Value {
    static JSON: OnceLock<Value> = OnceLock::new();
    JSON.get_or_init(|| serde_json::from_str(&std::fs::read_to_string(FIXTURE).unwrap()).unwrap())
}

/// A committed tokenizer that only Hugging Face's `tokenizers` reads
/// (`tests/fixtures/tokenizer/hf/`, e.g. SentencePiece-style `llama2_spm`).
fn hf_only_fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/tokenizer/hf")
        .join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn spm_fixture() -> &'static Value {
    static JSON: OnceLock<Value> = OnceLock::new();
    JSON.get_or_init(|| hf_only_fixture("llama2_spm"))
}

fn qwen2_fixture() -> &'static Value {
    static JSON: OnceLock<Value> = OnceLock::new();
    JSON.get_or_init(|| hf_only_fixture("qwen2_bpe"))
}

/// A character tokenizer.json with both special tokens: ids "\n" " " "," "a"
/// "b" "c" "d" "e", then `<|endoftext|>` = 8 and `<unk>` = 9.
fn char_fixture() -> &'static Value {
    static JSON: OnceLock<Value> = OnceLock::new();
    JSON.get_or_init(|| {
        let chars = CharTokenizer::from_text("abc, dee\n")
            .unwrap()
            .chars()
            .to_vec();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        CharTokenizer::with_specials(chars, true, true)
            .unwrap()
            .save(&path)
            .unwrap();
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    })
}

/// Write `bytes` to a temporary tokenizer.json and load it.
fn load_bytes(bytes: &[u8]) -> lmforge::error::Result<Box<dyn Tokenizer>> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(&path, bytes).unwrap();
    tokenizer::load(&path)
}

/// The message of the format error that loading `fixture` after `edit` gives.
fn format_error(fixture: &Value, edit: impl FnOnce(&mut Value)) -> String {
    let mut json = fixture.clone();
    edit(&mut json);
    match load_bytes(&serde_json::to_vec(&json).unwrap()) {
        Err(Error::Format { message, .. }) => message,
        Err(e) => panic!("not a format error: {e}"),
        Ok(_) => panic!("loaded"),
    }
}

/// A change to a fixture and a part of the error message it must give.
type Edit = (fn(&mut Value), &'static str);

fn assert_names(message: &str, parts: &[&str]) {
    for part in parts {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
}

#[test]
fn id_of_2_pow_40_is_an_error_not_an_abort() {
    let err = format_error(hf_fixture(), |j| {
        j["model"]["vocab"]["A"] = (1u64 << 40).into()
    });
    assert_names(
        &err,
        &["vocabulary entry \"A\"", "id 1099511627776 is too large"],
    );
}

#[test]
fn id_beyond_the_vocabulary_names_the_entry_and_the_missing_id() {
    let err = format_error(hf_fixture(), |j| j["model"]["vocab"]["A"] = 5000.into());
    assert_names(
        &err,
        &["\"A\" has id 5000, out of range", "id 33 is missing"],
    );
}

#[test]
fn gap_in_the_ids_names_the_entry_and_the_missing_id() {
    let err = format_error(hf_fixture(), |j| {
        j["model"]["vocab"].as_object_mut().unwrap().remove("A");
    });
    assert_names(
        &err,
        &["\"Ġwh\" has id 399, out of range", "id 33 is missing"],
    );
}

#[test]
fn two_strings_with_one_id_are_both_named() {
    let err = format_error(hf_fixture(), |j| j["model"]["vocab"]["B"] = 33.into());
    assert_names(&err, &["entries \"A\" and \"B\" both have id 33"]);
}

#[test]
fn added_token_with_a_huge_or_negative_id_is_refused() {
    for (id, problem) in [
        (json!(1u64 << 40), "id 1099511627776 is too large"),
        (json!(u64::MAX), "is too large"),
        (json!(1e30), "id 1e+30 is too large"),
        (json!(-1), "id -1 is negative"),
        (json!(2.5), "id 2.5 is not an integer"),
    ] {
        let err = format_error(hf_fixture(), |j| j["added_tokens"][0]["id"] = id);
        assert_names(&err, &["added token 0 (\"<|endoftext|>\")", problem]);
    }
}

#[test]
fn added_token_beyond_the_vocabulary_is_out_of_range() {
    let err = format_error(hf_fixture(), |j| j["added_tokens"][0]["id"] = 5000.into());
    assert_names(
        &err,
        &[
            "added token 0",
            "has id 5000, out of range",
            "id 400 is missing",
        ],
    );
}

#[test]
fn added_token_on_another_tokens_id_is_refused() {
    let err = format_error(hf_fixture(), |j| j["added_tokens"][0]["id"] = 33.into());
    assert_names(
        &err,
        &["\"<|endoftext|>\" has id 33, already taken by \"A\""],
    );
}

#[test]
fn added_token_listed_with_two_ids_is_refused() {
    let err = format_error(hf_fixture(), |j| {
        let second = json!({"id": 400, "content": "<|endoftext|>"});
        j["added_tokens"].as_array_mut().unwrap().push(second);
    });
    assert_names(&err, &["\"<|endoftext|>\" has two ids, 0 and 400"]);
}

#[test]
fn special_tokens_in_the_vocabulary_or_only_added_both_load() {
    let text = "Hello there<|endoftext|>again";
    let want = load_bytes(&serde_json::to_vec(hf_fixture()).unwrap())
        .unwrap()
        .encode(text)
        .unwrap();
    assert!(want.contains(&0), "<|endoftext|> is special: {want:?}");
    // As lmforge saves it: the special only in added_tokens.
    let mut json = hf_fixture().clone();
    json["model"]["vocab"]
        .as_object_mut()
        .unwrap()
        .remove("<|endoftext|>");
    let tok = load_bytes(&serde_json::to_vec(&json).unwrap()).unwrap();
    assert_eq!((tok.vocab_size(), tok.encode(text).unwrap()), (400, want));
}

#[test]
fn special_id_far_beyond_the_tokens_is_refused_not_allocated() {
    let bytes: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    let err = BpeTokenizer::from_ranks("t", Pattern::Gpt2, bytes, vec![("<s>".into(), u32::MAX)])
        .unwrap_err()
        .to_string();
    assert_names(&err, &["\"<s>\" has id 4294967295, beyond the 256 tokens"]);
}

#[test]
fn merge_naming_a_missing_token_is_refused() {
    let err = format_error(hf_fixture(), |j| {
        j["model"]["merges"][3] = json!(["Ġ", "nope"])
    });
    assert_names(
        &err,
        &["merge 3", "names \"nope\", which is not in the vocabulary"],
    );
    let err = format_error(hf_fixture(), |j| {
        j["model"]["merges"][0] = json!(["A", "B"])
    });
    assert_names(
        &err,
        &["merge 0", "makes \"AB\", which is not in the vocabulary"],
    );
}

#[test]
fn vocabulary_entry_outside_the_byte_alphabet_or_empty_is_refused() {
    let err = format_error(hf_fixture(), |j| j["model"]["vocab"][" "] = 400.into());
    assert_names(&err, &["\" \" is not in the byte-level alphabet"]);
    let err = format_error(hf_fixture(), |j| j["model"]["vocab"][""] = 400.into());
    assert_names(&err, &["vocabulary entry \"\" is empty"]);
}

#[test]
fn wrong_json_types_are_named() {
    let cases: [Edit; 16] = [
        (
            |j| j["model"]["vocab"] = json!([]),
            "model.vocab is [], expected an object",
        ),
        (
            |j| j["model"] = json!({"type": "BPE"}),
            "model.vocab is missing",
        ),
        (
            |j| j["model"]["vocab"]["A"] = "33".into(),
            "\"A\": id \"33\" is not a number",
        ),
        (
            |j| j["model"]["vocab"]["A"] = 33.5.into(),
            "\"A\": id 33.5 is not an integer",
        ),
        (
            |j| j["model"]["vocab"]["A"] = Value::Null,
            "\"A\": the id is missing",
        ),
        (
            |j| j["model"]["merges"] = json!({}),
            "model.merges is {}, expected a list",
        ),
        (
            |j| j["model"]["merges"][1] = 5.into(),
            "merge 1 is 5, expected",
        ),
        (
            |j| j["model"]["merges"][1] = "Ġt".into(),
            "merge 1 is \"Ġt\", expected",
        ),
        (
            |j| j["model"]["merges"][1] = json!(["h", 1]),
            "merge 1 is [\"h\",1], expected",
        ),
        (
            |j| j["added_tokens"] = 5.into(),
            "added_tokens is 5, expected a list",
        ),
        (
            |j| j["added_tokens"][0]["content"] = 7.into(),
            "added_tokens[0].content is 7",
        ),
        (
            |j| j["added_tokens"][0]["content"] = "".into(),
            "added_tokens[0].content is \"\"",
        ),
        (
            |j| j["model"]["ignore_merges"] = "yes".into(),
            "model.ignore_merges is \"yes\"",
        ),
        (
            |j| j["pre_tokenizer"]["use_regex"] = "no".into(),
            "unsupported pre_tokenizer",
        ),
        (|j| j["model"]["type"] = 3.into(), "model.type is 3"),
        (|j| *j = json!([]), "model.type is missing"),
    ];
    for (edit, want) in cases {
        assert_names(&format_error(hf_fixture(), edit), &[want]);
    }
}

#[test]
fn truncated_or_non_utf8_file_is_not_valid_json() {
    let text = serde_json::to_vec(hf_fixture()).unwrap();
    for bytes in [&text[..text.len() / 2], &b"{\"model\": \"\xff\"}"[..]] {
        match load_bytes(bytes) {
            Err(Error::Format { message, .. }) => assert_names(&message, &["not valid JSON"]),
            other => panic!("{:?}", other.map(|t| t.kind())),
        }
    }
}

#[test]
fn character_tokenizer_ids_are_checked() {
    let cases: [Edit; 8] = [
        (
            |j| j["model"]["vocab"]["b"] = (1u64 << 40).into(),
            "\"b\": id 1099511627776 is too large",
        ),
        (
            |j| j["model"]["vocab"]["b"] = (-1).into(),
            "\"b\": id -1 is negative",
        ),
        (
            |j| j["model"]["vocab"]["b"] = "4".into(),
            "\"b\": id \"4\" is not a number",
        ),
        (
            |j| j["model"]["vocab"]["c"] = 4.into(),
            "entries \"b\" and \"c\" both have id 4",
        ),
        (
            |j| j["model"]["vocab"]["c"] = 99.into(),
            "\"c\" has id 99, out of range",
        ),
        (
            |j| j["model"]["vocab"]["ab"] = 10.into(),
            "\"ab\" is not one character",
        ),
        (
            |j| j["model"]["vocab"] = json!({}),
            "needs at least one character",
        ),
        (
            |j| j["model"]["vocab"]["<unk>"] = 8.into(),
            "\"<unk>\" and \"<|endoftext|>\" both have id 8",
        ),
    ];
    for (edit, want) in cases {
        assert_names(&format_error(char_fixture(), edit), &[want]);
    }
    let err = format_error(char_fixture(), |j| j["model"]["vocab"]["c"] = 99.into());
    assert_names(&err, &["id 5 is missing"]);
}

#[test]
fn tiktoken_ranks_are_checked() {
    let path = Path::new("ranks.tiktoken");
    for (text, want) in [
        (" 0", "line 1: empty token"),
        (
            "YQ== 18446744073709551616",
            "rank \"18446744073709551616\" is not a whole number",
        ),
        ("YQ== -1", "rank \"-1\" is not a whole number"),
        ("YQ== 0\nYg== 7", "line 2: rank 7 out of order: expected 1"),
    ] {
        let err = tokenizer::bpe::parse_tiktoken(text, path)
            .unwrap_err()
            .to_string();
        assert_names(&err, &[want]);
    }
}

// The property test: random structural mutations of both fixtures.

/// A JSON value of any type, biased to ids that break naive readers.
fn hostile_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (0u64..450).prop_map(Value::from),
        2 => prop::sample::select(vec![1u64 << 32, u32::MAX.into(), 1 << 40, u64::MAX])
            .prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        2 => any::<i64>().prop_map(Value::from),
        1 => prop::sample::select(vec![0.5, 1.0, -1.0, 1e30, -1e30, 4.5e9]).prop_map(Value::from),
        1 => "[a-zĠ ]{0,3}".prop_map(Value::from),
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::from),
        1 => prop::sample::select(vec![json!([]), json!({}), json!(["Ġ", "t"]), json!({"id": 1})]),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Replace a random id (vocabulary or added token) with a hostile value.
    SetId(Index, Value),
    /// Replace any node of the tree with a hostile value.
    SetAny(Index, Value),
    /// Delete a field or array element anywhere.
    Delete(Index),
    /// A new vocabulary string (an existing one plus a suffix) with its id.
    DuplicateVocab(Index, String),
    DropVocab(Index),
    /// Copy merge `.0` to position `.1`.
    DuplicateMerge(Index, Index),
    DropMerge(Index),
    ModelType(Value),
    /// Swap an added token's id with another id of the file.
    SwapAddedId(Index, Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let index = any::<Index>;
    prop_oneof![
        3 => (index(), hostile_value()).prop_map(|(i, v)| Mutation::SetId(i, v)),
        2 => (index(), hostile_value()).prop_map(|(i, v)| Mutation::SetAny(i, v)),
        2 => index().prop_map(Mutation::Delete),
        1 => (index(), "[a-zĠ]{1,2}").prop_map(|(i, s)| Mutation::DuplicateVocab(i, s)),
        1 => index().prop_map(Mutation::DropVocab),
        1 => (index(), index()).prop_map(|(a, b)| Mutation::DuplicateMerge(a, b)),
        1 => index().prop_map(Mutation::DropMerge),
        1 => prop_oneof![
            prop::sample::select(vec!["BPE", "WordLevel", "Unigram"]).prop_map(Value::from),
            hostile_value(),
        ]
        .prop_map(Mutation::ModelType),
        1 => (index(), index()).prop_map(|(a, b)| Mutation::SwapAddedId(a, b)),
    ]
}

/// Damage to the file's text after the structural mutations.
#[derive(Debug, Clone)]
enum TextMutation {
    Truncate(Index),
    Flip(Vec<(Index, u8)>),
}

fn text_mutation() -> impl Strategy<Value = TextMutation> {
    prop_oneof![
        any::<Index>().prop_map(TextMutation::Truncate),
        prop::collection::vec((any::<Index>(), 1..=255u8), 1..4).prop_map(TextMutation::Flip),
    ]
}

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    At(usize),
}

/// The path of every node below `value`.
fn paths(value: &Value, here: &mut Vec<Step>, out: &mut Vec<Vec<Step>>) {
    let mut visit = |step: Step, child: &Value, out: &mut Vec<Vec<Step>>| {
        here.push(step);
        out.push(here.clone());
        paths(child, here, out);
        here.pop();
    };
    match value {
        Value::Object(map) => map
            .iter()
            .for_each(|(k, v)| visit(Step::Key(k.clone()), v, out)),
        Value::Array(list) => list
            .iter()
            .enumerate()
            .for_each(|(i, v)| visit(Step::At(i), v, out)),
        _ => {}
    }
}

fn node<'a>(mut value: &'a mut Value, path: &[Step]) -> Option<&'a mut Value> {
    for step in path {
        value = match step {
            Step::Key(k) => value.as_object_mut()?.get_mut(k)?,
            Step::At(i) => value.as_array_mut()?.get_mut(*i)?,
        };
    }
    Some(value)
}

/// The paths of every id: vocabulary values and added tokens' `id`s.
fn id_paths(json: &Value) -> (Vec<Vec<Step>>, Vec<Vec<Step>>) {
    let key = |k: &str| Step::Key(k.into());
    let vocab = json["model"]["vocab"].as_object().into_iter().flatten();
    let vocab = vocab
        .map(|(k, _)| vec![key("model"), key("vocab"), key(k)])
        .collect();
    let added = json["added_tokens"].as_array().map_or(0, Vec::len);
    let added = (0..added)
        .map(|i| vec![key("added_tokens"), Step::At(i), key("id")])
        .collect();
    (vocab, added)
}

fn pick<T: Clone>(items: &[T], at: &Index) -> Option<T> {
    (!items.is_empty()).then(|| items[at.index(items.len())].clone())
}

fn set(json: &mut Value, path: Option<Vec<Step>>, value: Value) {
    if let Some(slot) = path.and_then(|p| node(json, &p)) {
        *slot = value;
    }
}

fn delete(json: &mut Value, path: &[Step]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    match (node(json, parent), last) {
        (Some(Value::Object(map)), Step::Key(k)) => drop(map.remove(k)),
        (Some(Value::Array(list)), Step::At(i)) if *i < list.len() => drop(list.remove(*i)),
        _ => {}
    }
}

fn apply(json: &mut Value, mutation: &Mutation) {
    let (vocab_ids, added_ids) = id_paths(json);
    let all_ids = [vocab_ids.clone(), added_ids.clone()].concat();
    let vocab_keys: Vec<String> = json["model"]["vocab"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .collect();
    match mutation {
        Mutation::SetId(at, v) => set(json, pick(&all_ids, at), v.clone()),
        Mutation::SetAny(at, v) => {
            let mut all = Vec::new();
            paths(json, &mut Vec::new(), &mut all);
            set(json, pick(&all, at), v.clone());
        }
        Mutation::Delete(at) => {
            let mut all = Vec::new();
            paths(json, &mut Vec::new(), &mut all);
            if let Some(path) = pick(&all, at) {
                delete(json, &path);
            }
        }
        Mutation::DuplicateVocab(at, suffix) => {
            if let (Some(k), Some(vocab)) = (
                pick(&vocab_keys, at),
                json.pointer_mut("/model/vocab")
                    .and_then(Value::as_object_mut),
            ) {
                let id = vocab.get(&k).cloned().unwrap_or_default();
                vocab.insert(format!("{k}{suffix}"), id);
            }
        }
        Mutation::DropVocab(at) => {
            if let (Some(k), Some(vocab)) = (
                pick(&vocab_keys, at),
                json.pointer_mut("/model/vocab")
                    .and_then(Value::as_object_mut),
            ) {
                vocab.remove(&k);
            }
        }
        Mutation::DuplicateMerge(from, to) => {
            if let Some(merges) = json
                .pointer_mut("/model/merges")
                .and_then(Value::as_array_mut)
                .filter(|m| !m.is_empty())
            {
                let merge = merges[from.index(merges.len())].clone();
                let to = to.index(merges.len() + 1);
                merges.insert(to, merge);
            }
        }
        Mutation::DropMerge(at) => {
            if let Some(merges) = json
                .pointer_mut("/model/merges")
                .and_then(Value::as_array_mut)
                .filter(|m| !m.is_empty())
            {
                merges.remove(at.index(merges.len()));
            }
        }
        Mutation::ModelType(v) => {
            if let Some(model) = json.pointer_mut("/model").and_then(Value::as_object_mut) {
                model.insert("type".into(), v.clone());
            }
        }
        Mutation::SwapAddedId(a, b) => {
            let (Some(a), Some(b)) = (pick(&added_ids, a), pick(&all_ids, b)) else {
                return;
            };
            let (Some(x), Some(y)) = (node(json, &a).cloned(), node(json, &b).cloned()) else {
                return;
            };
            set(json, Some(a), y);
            set(json, Some(b), x);
        }
    }
}

fn damage(mut bytes: Vec<u8>, damage: &Option<TextMutation>) -> Vec<u8> {
    match damage {
        None => {}
        Some(TextMutation::Truncate(at)) => bytes.truncate(at.index(bytes.len() + 1)),
        Some(TextMutation::Flip(_)) if bytes.is_empty() => {}
        Some(TextMutation::Flip(flips)) => {
            for (at, mask) in flips {
                let i = at.index(bytes.len());
                bytes[i] ^= mask;
            }
        }
    }
    bytes
}

/// Load a mutated copy of `fixture`: Ok, or an error with a message; on Ok
/// the tokenizer encodes and decodes without panicking.
fn check_mutated(
    fixture: &Value,
    mutations: &[Mutation],
    text: &Option<TextMutation>,
) -> Result<(), TestCaseError> {
    let mut json = fixture.clone();
    for m in mutations {
        apply(&mut json, m);
    }
    let bytes = damage(serde_json::to_vec_pretty(&json).unwrap(), text);
    match load_bytes(&bytes) {
        Ok(tok) => {
            let sample = "Hello, world!\n<|endoftext|> abc 123 é";
            if let Ok(ids) = tok.encode(sample) {
                let _ = tok.decode(&ids);
            }
            let _ = tok.encode_parallel(sample, 2);
            let _ = tok.decode(&[0, 1, tok.vocab_size() as u32, u32::MAX]);
        }
        Err(Error::Format { message, .. }) => prop_assert!(!message.trim().is_empty()),
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn mutated_bpe_files_never_panic(
        mutations in prop::collection::vec(mutation(), 1..4),
        text in prop::option::weighted(0.2, text_mutation()),
    ) {
        check_mutated(hf_fixture(), &mutations, &text)?;
    }

    #[test]
    fn mutated_sentencepiece_files_never_panic(
        mutations in prop::collection::vec(mutation(), 1..4),
        text in prop::option::weighted(0.2, text_mutation()),
    ) {
        check_mutated(spm_fixture(), &mutations, &text)?;
    }

    #[test]
    fn mutated_qwen2_files_never_panic(
        mutations in prop::collection::vec(mutation(), 1..4),
        text in prop::option::weighted(0.2, text_mutation()),
    ) {
        check_mutated(qwen2_fixture(), &mutations, &text)?;
    }

    #[test]
    fn mutated_char_files_never_panic(
        mutations in prop::collection::vec(mutation(), 1..4),
        text in prop::option::weighted(0.2, text_mutation()),
    ) {
        check_mutated(char_fixture(), &mutations, &text)?;
    }
}
