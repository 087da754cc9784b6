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
//! lmforge never adds a BOS or EOS token when it encodes, so the files say
//! `add_bos_token = false`. The character tokenizer has no GGUF counterpart
//! and is refused; so, for now, are SentencePiece-style vocabularies
//! (`tokenizer.ggml.model = llama`, Llama 2 and Mistral).

use super::file::Value;
use crate::tokenizer::Pattern;
use crate::tokenizer::hf::{LLAMA3_SPLIT, QWEN2_SPLIT};
use serde_json::{Value as Json, json};

/// GGUF token types (`llama_token_type`).
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

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
    match model["type"].as_str() {
        Some("WordLevel") => return Err(CHAR_REFUSAL.into()),
        Some("BPE") if model["byte_fallback"] == true => {
            return Err(
                "SentencePiece-style vocabularies (byte_fallback: Llama 2, Mistral) are not \
                        exported to GGUF yet"
                    .into(),
            );
        }
        Some("BPE") => {}
        other => {
            return Err(format!(
                "a {other:?} tokenizer cannot be exported to GGUF yet"
            ));
        }
    }
    let pre = pre_name(&json["pre_tokenizer"]).ok_or_else(|| {
        format!(
            "llama.cpp has no pre-tokenizer matching {}; it would split text differently",
            json["pre_tokenizer"]
        )
    })?;
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
    let vocab = model["vocab"]
        .as_object()
        .ok_or("model.vocab is not an object")?;
    for (text, id) in vocab {
        put(
            id.as_u64().ok_or("a vocabulary id is not a number")?,
            text,
            NORMAL,
        )?;
    }
    for added in json["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(text)) = (added["id"].as_u64(), added["content"].as_str()) else {
            return Err(format!("added token {added} has no id or content"));
        };
        put(
            id,
            text,
            if added["special"] == false {
                USER_DEFINED
            } else {
                CONTROL
            },
        )?;
    }
    let (texts, types): (Vec<Value>, Vec<Value>) = tokens
        .into_iter()
        .enumerate()
        .map(|(id, t)| t.unwrap_or_else(|| (format!("[PAD{id}]"), UNUSED)))
        .map(|(text, ty)| (Value::String(text), Value::I32(ty)))
        .unzip();
    let merges = model["merges"]
        .as_array()
        .ok_or("model.merges is not a list")?;
    let merges: Vec<Value> = merges
        .iter()
        .map(|m| match (m.as_str(), m.as_array()) {
            (Some(s), _) => Some(Value::String(s.to_string())),
            (_, Some(pair)) => Some(Value::String(format!(
                "{} {}",
                pair.first()?.as_str()?,
                pair.get(1)?.as_str()?
            ))),
            _ => None,
        })
        .collect::<Option<_>>()
        .ok_or("a merge is neither \"a b\" nor [\"a\", \"b\"]")?;
    let s = |v: &str| Value::String(v.to_string());
    let mut keys = vec![
        ("tokenizer.ggml.model".to_string(), s("gpt2")),
        ("tokenizer.ggml.pre".to_string(), s(pre)),
        ("tokenizer.ggml.tokens".to_string(), Value::Array(texts)),
        ("tokenizer.ggml.token_type".to_string(), Value::Array(types)),
        ("tokenizer.ggml.merges".to_string(), Value::Array(merges)),
    ];
    for (key, id) in [("bos_token_id", ids.bos), ("eos_token_id", ids.eos)] {
        if let Some(id) = id.filter(|&id| (id as usize) < vocab_size) {
            keys.push((format!("tokenizer.ggml.{key}"), Value::U32(id)));
        }
    }
    keys.push((
        "tokenizer.ggml.add_bos_token".to_string(),
        Value::Bool(false),
    ));
    keys.push((
        "tokenizer.ggml.add_eos_token".to_string(),
        Value::Bool(false),
    ));
    Ok(keys)
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
    match model.as_deref() {
        Some("gpt2") => {}
        Some(other) => {
            return Err(format!(
                "tokenizer.ggml.model {other:?} is not read yet (only \"gpt2\", byte-level BPE)"
            ));
        }
        None => return Err("the file has no tokenizer (tokenizer.ggml.model is missing)".into()),
    }
    let pre = key("pre")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or("default".into());
    let pre_tokenizer = pre_tokenizer(&pre).ok_or_else(|| {
        format!("tokenizer.ggml.pre {pre:?} is not supported (gpt-2, llama-bpe, qwen2, smollm)")
    })?;
    let strings = |name: &str| -> Result<Vec<String>, String> {
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
    };
    let tokens = strings("tokens")?;
    let types: Vec<i64> = match key("token_type") {
        None => vec![NORMAL as i64; tokens.len()],
        Some(v) => v
            .as_array()
            .filter(|a| a.len() == tokens.len())
            .ok_or("tokenizer.ggml.token_type does not have one entry per token")?
            .iter()
            .map(|t| t.as_f64().map(|x| x as i64).unwrap_or(NORMAL as i64))
            .collect(),
    };
    let mut vocab = serde_json::Map::new();
    let mut added = Vec::new();
    for (id, (text, &ty)) in tokens.iter().zip(&types).enumerate() {
        match ty as i32 {
            CONTROL | USER_DEFINED => added.push(json!({
                "id": id, "content": text, "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": false, "special": ty as i32 == CONTROL})),
            _ => {
                vocab.insert(text.clone(), id.into());
            }
        }
    }
    let merges = strings("merges")?;
    let eot = ["eos_token_id", "bos_token_id"]
        .iter()
        .find_map(|k| key(k).and_then(|v| v.as_u64()))
        .map(|id| id as u32)
        .filter(|&id| (id as usize) < tokens.len());
    let tokenizer = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": added, "normalizer": null, "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": pre == "llama-bpe", "vocab": vocab, "merges": merges},
    });
    Ok((tokenizer, eot))
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
