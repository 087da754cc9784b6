//! Character-level tokenizer, as in the course: the vocabulary is the sorted set
//! of distinct characters in the training text, and token id `i` is the `i`-th
//! character of that list.
//!
//! It is saved as a Hugging Face `tokenizer.json` (a `WordLevel` model whose
//! words are single characters, a pre-tokenizer that isolates every character,
//! and a `Fuse` decoder), so `tokenizers.Tokenizer.from_file` gives the same ids.

use super::Tokenizer;
use crate::error::{Error, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Splits text into single characters (any Unicode scalar, newlines included).
const SPLIT_EVERY_CHAR: &str = r"[\s\S]";

#[derive(Debug, Clone, PartialEq)]
pub struct CharTokenizer {
    chars: Vec<char>,
    ids: HashMap<char, u32>,
}

impl CharTokenizer {
    /// Build the vocabulary from the characters that occur in `text`.
    pub fn from_text(text: &str) -> Result<Self> {
        let set: std::collections::BTreeSet<char> = text.chars().collect();
        Self::from_chars(set.into_iter().collect())
    }

    /// A tokenizer whose token ids are the positions of `chars` (must be distinct).
    pub fn from_chars(chars: Vec<char>) -> Result<Self> {
        if chars.is_empty() {
            return Err(Error::Data(
                "a character vocabulary needs at least one character".into(),
            ));
        }
        let ids: HashMap<char, u32> = chars
            .iter()
            .enumerate()
            .map(|(i, &c)| (c, i as u32))
            .collect();
        if ids.len() != chars.len() {
            return Err(Error::Data(
                "character vocabulary has duplicate characters".into(),
            ));
        }
        Ok(CharTokenizer { chars, ids })
    }

    /// The characters, in token-id order.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// Read a `tokenizer.json` written by [`Tokenizer::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::format(path, format!("not valid JSON: {e}")))?;
        let model = &json["model"];
        if model["type"] != "WordLevel"
            || json["pre_tokenizer"]["pattern"]["Regex"] != SPLIT_EVERY_CHAR
        {
            return Err(Error::format(
                path,
                "not a character-level tokenizer.json written by lmforge",
            ));
        }
        let vocab = model["vocab"]
            .as_object()
            .ok_or_else(|| Error::format(path, "model.vocab is missing"))?;
        let mut by_id = BTreeMap::new();
        for (word, id) in vocab {
            let mut it = word.chars();
            let (Some(c), None, Some(id)) = (it.next(), it.next(), id.as_u64()) else {
                return Err(Error::format(
                    path,
                    format!("vocabulary entry {word:?} is not one character with an id"),
                ));
            };
            by_id.insert(id, c);
        }
        if by_id.keys().copied().ne(0..by_id.len() as u64) {
            return Err(Error::format(path, "vocabulary ids are not 0..N"));
        }
        Self::from_chars(by_id.into_values().collect())
    }
}

impl Tokenizer for CharTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(text.len());
        let mut unknown = std::collections::BTreeSet::new();
        for c in text.chars() {
            match self.ids.get(&c) {
                Some(&id) => ids.push(id),
                None => {
                    unknown.insert(c);
                }
            }
        }
        if !unknown.is_empty() {
            let list: Vec<String> = unknown.iter().map(|c| format!("{:?}", c)).collect();
            return Err(Error::OutOfVocabulary(list.join(", ")));
        }
        Ok(ids)
    }

    fn decode_bytes(&self, ids: &[u32]) -> Vec<u8> {
        let mut out = String::with_capacity(ids.len());
        for &id in ids {
            out.push(
                self.chars
                    .get(id as usize)
                    .copied()
                    .unwrap_or(char::REPLACEMENT_CHARACTER),
            );
        }
        out.into_bytes()
    }

    fn vocab_size(&self) -> usize {
        self.chars.len()
    }

    fn kind(&self) -> &'static str {
        "char"
    }

    fn save(&self, path: &Path) -> Result<()> {
        let vocab: serde_json::Map<String, serde_json::Value> = self
            .chars
            .iter()
            .enumerate()
            .map(|(i, c)| (c.to_string(), i.into()))
            .collect();
        let json = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": [],
            "normalizer": null,
            "pre_tokenizer": {
                "type": "Split",
                "pattern": { "Regex": SPLIT_EVERY_CHAR },
                "behavior": "Isolated",
                "invert": false
            },
            "post_processor": null,
            "decoder": { "type": "Fuse" },
            "model": { "type": "WordLevel", "vocab": vocab, "unk_token": "<unk>" }
        });
        let bytes = serde_json::to_vec_pretty(&json).expect("JSON values always serialise");
        crate::fsutil::write_atomic_bytes(path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_is_sorted_unique_characters() {
        let tok = CharTokenizer::from_text("hello world\n").unwrap();
        assert_eq!(tok.chars(), &['\n', ' ', 'd', 'e', 'h', 'l', 'o', 'r', 'w']);
        let ids = tok.encode("hold").unwrap();
        assert_eq!(ids, vec![4, 6, 5, 2]);
        assert_eq!(tok.decode(&ids), "hold");
    }

    #[test]
    fn unknown_characters_are_listed() {
        let tok = CharTokenizer::from_text("abc").unwrap();
        let err = tok.encode("abxzx").unwrap_err().to_string();
        assert!(err.contains("'x'") && err.contains("'z'"), "{err}");
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        let tok = CharTokenizer::from_text("Ünïcødé\r\n\t 🎉 text").unwrap();
        tok.save(&path).unwrap();
        assert_eq!(CharTokenizer::load(&path).unwrap(), tok);
    }
}
