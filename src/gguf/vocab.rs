//! The tokenizer inside a GGUF file (`tokenizer.ggml.*`), from and to a
//! Hugging Face `tokenizer.json`.
//!
//! Byte-level BPE (GPT-2's, lmforge's own, Llama 3's, Qwen2's, SmolLM's) is
//! GGUF's `gpt2` model: `tokens` are the vocabulary's strings in id order
//! (GPT-2's byte-to-character spelling, `Ġ` for a space), `merges` the merge
//! rules as `"a b"`, `token_type` 1 (normal), 3 (control: a special token),
//! 4 (user-defined: an added token that is not special) or 5 (unused: an id
//! the vocabulary leaves empty, written as `[PAD{id}]` as
//! `convert_hf_to_gguf.py` does). `tokenizer.ggml.pre` names the split regex
//! llama.cpp must apply before the merges:
//!
//! | `pre` | split |
//! |---|---|
//! | `gpt-2` | GPT-2's (`ByteLevel` with `use_regex`) |
//! | `llama-bpe` | Llama 3's (= tiktoken's `cl100k_base`, lmforge's `gpt4` pattern) |
//! | `qwen2` | Qwen2's (Llama 3's with single digits) |
//! | `smollm` | single digits, then GPT-2's (SmolLM) |
//!
//! SentencePiece-style vocabularies (Llama 2, TinyLlama, Mistral: GGUF's
//! `llama` model) are read too. Their `tokens` spell a space `▁`, `scores`
//! rank the pieces, and `token_type` 6 marks the byte tokens `<0x00>`..`<0xFF>`
//! that spell a character missing from the vocabulary. llama.cpp encodes
//! them by merging, at each step, the adjacent pair whose joined piece is in
//! the vocabulary with the highest score, after a leading `▁` when
//! `add_space_prefix` is set (the default). A Hugging Face BPE does the same
//! given the merges `(left, right)` of every piece that two shorter pieces
//! join into, ranked by the joined piece's score: that is how `transformers`
//! converts a SentencePiece model (`SentencePieceExtractor`), and what
//! [`from_gguf`] builds ([`sentencepiece_merges`]); [`to_gguf`] writes the
//! reverse, scores from a byte-fallback BPE's merge ranks ([`sentencepiece_keys`]).
//!
//! lmforge never adds a BOS or EOS token when it encodes, so the files it
//! writes say `add_bos_token = false`. The character tokenizer has no GGUF
//! counterpart and is refused.

use super::file::Value;
use crate::tokenizer::Pattern;
use crate::tokenizer::hf::{LLAMA3_SPLIT, QWEN2_SPLIT};
use serde_json::{Value as Json, json};

/// GGUF token types (`llama_token_type`).
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const UNKNOWN: i32 = 2;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;
const BYTE: i32 = 6;

/// The special ids a run records (its `config.json`'s `bos_token_id` and `eos_token_id`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SpecialIds {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
}

/// Why a character-level run cannot be exported, and what to do instead.
pub const CHAR_REFUSAL: &str = "this run uses the character tokenizer, and GGUF readers \
     (llama.cpp, Ollama, LM Studio) have no character vocabulary: they could not turn text into \
     this model's ids. Train with a byte-level BPE instead (--tokenizer gpt2, or one trained with \
     `lmforge tokenizer train`), or use `lmforge export-hf` for this run";

/// `tokenizer.ggml.pre` for a `tokenizer.json` pre-tokenizer, if llama.cpp has it.
fn pre_name(pre: &Json) -> Option<&'static str> {
    let byte_level = |p: &Json, regex: bool| {
        p["type"] == "ByteLevel"
            && p["add_prefix_space"] != true
            && (p["use_regex"].as_bool().unwrap_or(true) == regex)
    };
    if byte_level(pre, true) {
        return Some("gpt-2");
    }
    let steps = pre["pretokenizers"].as_array()?;
    match &steps[..] {
        [split, last] if split["type"] == "Split" && byte_level(last, false) => {
            match split["pattern"]["Regex"].as_str()? {
                r if r == Pattern::Gpt4.regex() || r == LLAMA3_SPLIT => Some("llama-bpe"),
                r if r == QWEN2_SPLIT => Some("qwen2"),
                _ => None,
            }
        }
        [digits, last]
            if digits["type"] == "Digits"
                && digits["individual_digits"] == true
                && byte_level(last, true) =>
        {
            Some("smollm")
        }
        _ => None,
    }
}

/// The `tokenizer.ggml.*` keys for the `tokenizer.json` in `json`, padded
/// to `vocab_size` tokens (the model's embedding rows).
pub fn to_gguf(
    json: &Json,
    vocab_size: usize,
    ids: SpecialIds,
) -> Result<Vec<(String, Value)>, String> {
    let model = &json["model"];
    let sentencepiece = match model["type"].as_str() {
        Some("WordLevel") => return Err(CHAR_REFUSAL.into()),
        Some("BPE") => model["byte_fallback"] == true,
        other => {
            return Err(format!(
                "a {other:?} tokenizer cannot be exported to GGUF yet"
            ));
        }
    };
    let tokens = token_table(json, vocab_size)?;
    let merges = merge_list(model)?;
    let s = |v: &str| Value::String(v.to_string());
    let mut keys = if sentencepiece {
        sentencepiece_keys(json, tokens, &merges)
    } else {
        let pre = pre_name(&json["pre_tokenizer"]).ok_or_else(|| {
            format!(
                "llama.cpp has no pre-tokenizer matching {}; it would split text differently",
                json["pre_tokenizer"]
            )
        })?;
        let (texts, types): (Vec<Value>, Vec<Value>) = tokens
            .into_iter()
            .map(|(text, ty)| (Value::String(text), Value::I32(ty)))
            .unzip();
        let merges = merges.iter().map(|[a, b]| s(&format!("{a} {b}"))).collect();
        vec![
            ("tokenizer.ggml.model".to_string(), s("gpt2")),
            ("tokenizer.ggml.pre".to_string(), s(pre)),
            ("tokenizer.ggml.tokens".to_string(), Value::Array(texts)),
            ("tokenizer.ggml.token_type".to_string(), Value::Array(types)),
            ("tokenizer.ggml.merges".to_string(), Value::Array(merges)),
        ]
    };
    for (key, id) in [("bos_token_id", ids.bos), ("eos_token_id", ids.eos)] {
        if let Some(id) = id.filter(|&id| (id as usize) < vocab_size) {
            keys.push((format!("tokenizer.ggml.{key}"), Value::U32(id)));
        }
    }
    for key in ["add_bos_token", "add_eos_token"] {
        keys.push((format!("tokenizer.ggml.{key}"), Value::Bool(false)));
    }
    Ok(keys)
}

/// Every id's token and type: the vocabulary's (normal), the added tokens
/// (control when special, else user-defined), `[PAD{id}]` (unused) where
/// the vocabulary leaves an embedding row without a token.
fn token_table(json: &Json, vocab_size: usize) -> Result<Vec<(String, i32)>, String> {
    let mut tokens: Vec<Option<(String, i32)>> = vec![None; vocab_size];
    let mut put = |id: u64, text: &str, ty: i32| match tokens.get_mut(id as usize) {
        Some(slot) => {
            *slot = Some((text.to_string(), ty));
            Ok(())
        }
        None => Err(format!(
            "token {text:?} has id {id}, outside the model's {vocab_size} embeddings"
        )),
    };
    let vocab = json["model"]["vocab"]
        .as_object()
        .ok_or("model.vocab is not an object")?;
    for (text, id) in vocab {
        let id = id.as_u64().ok_or("a vocabulary id is not a number")?;
        put(id, text, NORMAL)?;
    }
    for added in json["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(text)) = (added["id"].as_u64(), added["content"].as_str()) else {
            return Err(format!("added token {added} has no id or content"));
        };
        let special = added["special"] != false;
        put(id, text, if special { CONTROL } else { USER_DEFINED })?;
    }
    Ok(tokens
        .into_iter()
        .enumerate()
        .map(|(id, t)| t.unwrap_or_else(|| (format!("[PAD{id}]"), UNUSED)))
        .collect())
}

/// `model.merges` as pairs, from either spelling (`"a b"` or `["a", "b"]`).
fn merge_list(model: &Json) -> Result<Vec<[String; 2]>, String> {
    let merges = model["merges"]
        .as_array()
        .ok_or("model.merges is not a list")?;
    merges
        .iter()
        .map(|m| match (m.as_str(), m.as_array()) {
            (Some(s), _) => s.split_once(' ').map(|(a, b)| [a.into(), b.into()]),
            (_, Some(pair)) => Some([
                pair.first()?.as_str()?.into(),
                pair.get(1)?.as_str()?.into(),
            ]),
            _ => None,
        })
        .collect::<Option<_>>()
        .ok_or_else(|| "a merge is neither \"a b\" nor [\"a\", \"b\"]".into())
}

/// The keys of GGUF's `llama` (SentencePiece) model for a byte-fallback BPE.
/// llama.cpp joins the adjacent pair whose joined piece scores highest, so a
/// piece made by merge `r` (of `n`) scores `-r`, earlier merges first; pieces
/// no merge makes score below all of them (they are never joined into), byte
/// and control tokens 0. The leading `▁` is llama.cpp's `add_space_prefix`.
fn sentencepiece_keys(
    json: &Json,
    tokens: Vec<(String, i32)>,
    merges: &[[String; 2]],
) -> Vec<(String, Value)> {
    let mut rank = std::collections::HashMap::new();
    for (r, [a, b]) in merges.iter().enumerate() {
        rank.entry(format!("{a}{b}")).or_insert(r);
    }
    let unk = json["model"]["unk_token"].as_str();
    let is_byte = |t: &str| t.len() == 6 && t.starts_with("<0x") && t.ends_with('>');
    let (mut texts, mut scores, mut types) = (Vec::new(), Vec::new(), Vec::new());
    for (id, (text, ty)) in tokens.into_iter().enumerate() {
        let (score, ty) = match ty {
            NORMAL if Some(text.as_str()) == unk => (0.0, UNKNOWN),
            NORMAL if is_byte(&text) => (0.0, BYTE),
            NORMAL => match rank.get(&text) {
                Some(&r) => (-(r as f32), NORMAL),
                None => (-((merges.len() + id) as f32), NORMAL),
            },
            other => (0.0, other),
        };
        texts.push(Value::String(text));
        scores.push(Value::F32(score));
        types.push(Value::I32(ty));
    }
    let prepends = |step: &Json| {
        (step["type"] == "Prepend" && step["prepend"] == "▁")
            || (step["type"] == "Metaspace" && step["prepend_scheme"] != "never")
    };
    let steps = |part: &Json, list: &str| match part[list].as_array() {
        Some(list) => list.iter().any(prepends),
        None => prepends(part),
    };
    let space_prefix =
        steps(&json["normalizer"], "normalizers") || steps(&json["pre_tokenizer"], "pretokenizers");
    let s = |v: &str| Value::String(v.to_string());
    let mut keys = vec![
        ("tokenizer.ggml.model".to_string(), s("llama")),
        ("tokenizer.ggml.pre".to_string(), s("default")),
        ("tokenizer.ggml.tokens".to_string(), Value::Array(texts)),
        ("tokenizer.ggml.scores".to_string(), Value::Array(scores)),
        ("tokenizer.ggml.token_type".to_string(), Value::Array(types)),
        (
            "tokenizer.ggml.add_space_prefix".to_string(),
            Value::Bool(space_prefix),
        ),
    ];
    if let Some(id) = unk.and_then(|u| json["model"]["vocab"][u].as_u64()) {
        keys.push((
            "tokenizer.ggml.unknown_token_id".to_string(),
            Value::U32(id as u32),
        ));
    }
    keys
}

/// The pre-tokenizer of `tokenizer.json` for a `tokenizer.ggml.pre` name.
fn pre_tokenizer(pre: &str) -> Option<Json> {
    let byte_level = |regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": regex});
    let split = |regex: &str| {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
            byte_level(false)]})
    };
    Some(match pre {
        "gpt-2" | "gpt2" => byte_level(true),
        "llama-bpe" | "llama3" | "smaug-bpe" => split(Pattern::Gpt4.regex()),
        "qwen2" => split(QWEN2_SPLIT),
        "smollm" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        _ => return None,
    })
}

/// A `tokenizer.json` for the tokenizer stored in a GGUF file's metadata
/// (`get` looks a key up), and its end-of-text id.
pub fn from_gguf(get: impl Fn(&str) -> Option<Value>) -> Result<(Json, Option<u32>), String> {
    let key = |name: &str| get(&format!("tokenizer.ggml.{name}"));
    let model = key("model").and_then(|v| v.as_str().map(str::to_string));
    let model = model.ok_or("the file has no tokenizer (tokenizer.ggml.model is missing)")?;
    if model != "gpt2" && model != "llama" {
        return Err(format!(
            "tokenizer.ggml.model {model:?} is not read yet (only \"gpt2\", byte-level BPE, \
             and \"llama\", SentencePiece-style BPE)"
        ));
    }
    let tokens = strings(&key, "tokens")?;
    let types: Vec<i32> = match key("token_type") {
        None => vec![NORMAL; tokens.len()],
        Some(v) => v
            .as_array()
            .filter(|a| a.len() == tokens.len())
            .ok_or("tokenizer.ggml.token_type does not have one entry per token")?
            .iter()
            .map(|t| t.as_f64().map(|x| x as i32).unwrap_or(NORMAL))
            .collect(),
    };
    let eot = ["eos_token_id", "bos_token_id"]
        .iter()
        .find_map(|k| key(k).and_then(|v| v.as_u64()))
        .map(|id| id as u32)
        .filter(|&id| (id as usize) < tokens.len());
    let tokenizer = if model == "gpt2" {
        byte_level_bpe(&key, &tokens, &types)?
    } else {
        sentencepiece_bpe(&key, &tokens, &types)?
    };
    Ok((tokenizer, eot))
}

/// The list of strings under `tokenizer.ggml.{name}`.
fn strings(key: &impl Fn(&str) -> Option<Value>, name: &str) -> Result<Vec<String>, String> {
    let list = key(name).ok_or(format!("tokenizer.ggml.{name} is missing"))?;
    let list = list
        .as_array()
        .ok_or(format!("tokenizer.ggml.{name} is not a list"))?;
    list.iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect::<Option<_>>()
        .ok_or(format!(
            "tokenizer.ggml.{name} holds a value that is not a string"
        ))
}

/// A `tokenizer.json` added-token entry for id `id`.
fn added_token(id: usize, text: &str, special: bool) -> Json {
    json!({"id": id, "content": text, "single_word": false, "lstrip": false, "rstrip": false,
           "normalized": false, "special": special})
}

/// GGUF's `gpt2` model: byte-level BPE with its merges and split regex.
fn byte_level_bpe(
    key: &impl Fn(&str) -> Option<Value>,
    tokens: &[String],
    types: &[i32],
) -> Result<Json, String> {
    let pre = key("pre")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or("default".into());
    let pre_tokenizer = pre_tokenizer(&pre).ok_or_else(|| {
        format!("tokenizer.ggml.pre {pre:?} is not supported (gpt-2, llama-bpe, qwen2, smollm)")
    })?;
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (id, (text, &ty)) in tokens.iter().zip(types).enumerate() {
        match ty {
            CONTROL | USER_DEFINED => added.push(added_token(id, text, ty == CONTROL)),
            _ => {
                vocab.insert(text.clone(), id.into());
            }
        }
    }
    let merges = strings(key, "merges")?;
    Ok(json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added, "normalizer": null, "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": pre == "llama-bpe", "vocab": vocab, "merges": merges},
    }))
}

/// GGUF's `llama` model: SentencePiece-style BPE over `▁`-spelled pieces,
/// with byte fallback, as `transformers` lays out Llama 2's tokenizer.
fn sentencepiece_bpe(
    key: &impl Fn(&str) -> Option<Value>,
    tokens: &[String],
    types: &[i32],
) -> Result<Json, String> {
    let scores: Vec<f32> = key("scores")
        .ok_or("tokenizer.ggml.scores is missing (a SentencePiece vocabulary ranks its pieces by them)")?
        .as_array()
        .filter(|a| a.len() == tokens.len())
        .ok_or("tokenizer.ggml.scores does not have one entry per token")?
        .iter()
        .map(|v| v.as_f64().map(|x| x as f32))
        .collect::<Option<_>>()
        .ok_or("tokenizer.ggml.scores holds a value that is not a number")?;
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (id, (text, &ty)) in tokens.iter().zip(types).enumerate() {
        if matches!(ty, CONTROL | USER_DEFINED | UNKNOWN) {
            added.push(added_token(id, text, ty != USER_DEFINED));
        }
        vocab.entry(text.clone()).or_insert(id.into());
    }
    let unk = tokens
        .iter()
        .zip(types)
        .find(|(_, ty)| **ty == UNKNOWN)
        .map(|(t, _)| t.clone());
    let space_prefix = !matches!(key("add_space_prefix"), Some(Value::Bool(false)));
    let replace_spaces = json!({"type": "Replace", "pattern": {"String": " "}, "content": "▁"});
    let normalizer = match space_prefix {
        true => json!({"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"}, replace_spaces]}),
        false => replace_spaces,
    };
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if space_prefix {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    Ok(json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added, "normalizer": normalizer, "pre_tokenizer": null,
        "post_processor": null,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
                  "ignore_merges": false, "vocab": vocab,
                  "merges": sentencepiece_merges(tokens, types, &scores)},
    }))
}

/// The merges that reproduce SentencePiece's highest-score-first joining:
/// for every normal piece, each way to cut it into two normal pieces, ranked
/// by the whole piece's score (highest first; ties keep id order, then the
/// two halves' ids, as `transformers`' `SentencePieceExtractor` orders them).
fn sentencepiece_merges(tokens: &[String], types: &[i32], scores: &[f32]) -> Vec<[String; 2]> {
    let ids: std::collections::HashMap<&str, usize> = tokens
        .iter()
        .zip(types)
        .enumerate()
        .filter(|(_, (_, ty))| **ty == NORMAL)
        .map(|(id, (t, _))| (t.as_str(), id))
        .collect();
    let mut merges = Vec::new();
    for (id, piece) in tokens
        .iter()
        .enumerate()
        .filter(|(id, _)| types[*id] == NORMAL)
    {
        let mut cuts: Vec<(usize, usize, usize)> = piece
            .char_indices()
            .skip(1)
            .filter_map(|(at, _)| Some((*ids.get(&piece[..at])?, *ids.get(&piece[at..])?, at)))
            .collect();
        cuts.sort_unstable();
        merges.extend(cuts.into_iter().map(|(_, _, at)| (scores[id], id, at)));
    }
    // Stable: equal scores keep the order they were found in.
    merges.sort_by(|a, b| b.0.total_cmp(&a.0));
    merges
        .into_iter()
        .map(|(_, id, at)| [tokens[id][..at].to_string(), tokens[id][at..].to_string()])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_vocabulary_is_refused_with_what_to_do() {
        let json = json!({"model": {"type": "WordLevel", "vocab": {"a": 0}}});
        let err = to_gguf(&json, 1, SpecialIds::default()).unwrap_err();
        assert!(
            err.contains("character") && err.contains("--tokenizer gpt2"),
            "{err}"
        );
    }

    #[test]
    fn a_bpe_vocabulary_round_trips() {
        let json = json!({
            "added_tokens": [{"id": 3, "content": "<|endoftext|>", "special": true}],
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
            "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}});
        let keys = to_gguf(
            &json,
            5,
            SpecialIds {
                bos: Some(3),
                eos: Some(3),
            },
        )
        .unwrap();
        let get = |k: &str| {
            keys.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let tokens = get("tokenizer.ggml.tokens").unwrap();
        assert_eq!(
            tokens.as_array().unwrap()[4],
            Value::String("[PAD4]".into())
        );
        assert_eq!(
            get("tokenizer.ggml.pre").unwrap(),
            Value::String("gpt-2".into())
        );
        let (back, eot) = from_gguf(get).unwrap();
        assert_eq!(eot, Some(3));
        assert_eq!(back["model"]["vocab"]["ab"], 2);
        assert_eq!(back["model"]["merges"][0], "a b");
        assert_eq!(back["added_tokens"][0]["content"], "<|endoftext|>");
    }
}
