//! Character-level tokenizer, as in the course: the vocabulary is the sorted set
//! of distinct characters in the training text, and token id `i` is the `i`-th
//! character of that list.
//!
//! Two optional special tokens come after the characters, in this order:
//! `<|endoftext|>` (the separator `lmforge prepare` puts before every document)
//! and `<unk>` (stands for every character outside a capped vocabulary). They
//! are never produced from text by [`Tokenizer::encode`]: the text
//! `<|endoftext|>` encodes as its 13 characters (Hugging Face would match it as
//! the added token; lmforge keeps document separators out of band, like tiktoken).
//!
//! It is saved as a Hugging Face `tokenizer.json` (a `WordLevel` model whose
//! words are single characters, a pre-tokenizer that isolates every character,
//! and a `Fuse` decoder), so `tokenizers.Tokenizer.from_file` gives the same ids.

use super::{Tokenizer, bpe};
use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// Splits text into single characters (any Unicode scalar, newlines included).
const SPLIT_EVERY_CHAR: &str = r"[\s\S]";

/// Marks an ASCII character that is not in the vocabulary.
const NONE: u32 = u32::MAX;

/// The end-of-text token's text in `tokenizer.json` (as in GPT-2).
pub const EOT: &str = "<|endoftext|>";
/// The unknown-character token's text in `tokenizer.json`.
pub const UNK: &str = "<unk>";

#[derive(Debug, Clone, PartialEq)]
pub struct CharTokenizer {
    chars: Vec<char>,
    ids: HashMap<char, u32>,
    /// `ids` for ASCII characters (`NONE` where absent): most text is mostly
    /// ASCII, and a table lookup is several times faster than hashing.
    ascii_ids: [u32; 128],
    /// `<|endoftext|>` follows the characters (id `chars.len()`).
    has_eot: bool,
    /// `<unk>` comes last; unknown characters encode to it instead of failing.
    has_unk: bool,
}

impl CharTokenizer {
    /// Build the vocabulary from the characters that occur in `text`.
    pub fn from_text(text: &str) -> Result<Self> {
        let set: std::collections::BTreeSet<char> = text.chars().collect();
        Self::from_chars(set.into_iter().collect())
    }

    /// A tokenizer whose token ids are the positions of `chars` (must be distinct).
    pub fn from_chars(chars: Vec<char>) -> Result<Self> {
        Self::with_specials(chars, false, false)
    }

    /// Like [`CharTokenizer::from_chars`], then `<|endoftext|>` if `eot` and
    /// `<unk>` if `unk`, in that order, after the characters.
    pub fn with_specials(chars: Vec<char>, eot: bool, unk: bool) -> Result<Self> {
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
        Ok(CharTokenizer {
            chars,
            ascii_ids: std::array::from_fn(|b| {
                ids.get(&(b as u8 as char)).copied().unwrap_or(NONE)
            }),
            ids,
            has_eot: eot,
            has_unk: unk,
        })
    }

    /// The characters, in token-id order.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// The id of `<|endoftext|>`, if the vocabulary has it.
    pub fn eot_id(&self) -> Option<u32> {
        self.has_eot.then_some(self.chars.len() as u32)
    }

    /// The id of `<unk>`, if the vocabulary has it.
    pub fn unk_id(&self) -> Option<u32> {
        self.has_unk
            .then_some(self.chars.len() as u32 + self.has_eot as u32)
    }

    /// Read a `tokenizer.json` written by [`Tokenizer::save`].
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_hf_json(&bpe::read_json(path)?, path)
    }

    /// A tokenizer from the parsed `tokenizer.json` at `path` (named in
    /// errors). The file is untrusted: anything malformed is an
    /// [`Error::Format`] naming the entry.
    pub fn from_hf_json(json: &Value, path: &Path) -> Result<Self> {
        let bad = |message: String| Error::format(path, message);
        let model = &json["model"];
        if model["type"] != "WordLevel"
            || json["pre_tokenizer"]["pattern"]["Regex"] != SPLIT_EVERY_CHAR
        {
            return Err(bad(
                "not a character-level tokenizer.json written by lmforge".into(),
            ));
        }
        let mut vocab = bpe::read_vocab(model).map_err(bad)?;
        bpe::check_unique(&vocab).map_err(bad)?;
        let ids: Vec<u32> = vocab.iter().map(|e| e.1).collect();
        bpe::check_dense(&ids, |i| {
            format!("vocabulary entry {}", bpe::show_str(vocab[i].0))
        })
        .map_err(bad)?;
        // Ids are now 0..N with no repeat: sorted, entry `i` has id `i`.
        vocab.sort_unstable_by_key(|e| e.1);
        let (chars, eot, unk) = split_specials(&vocab).map_err(bad)?;
        Self::with_specials(chars, eot, unk).map_err(|e| bad(e.to_string()))
    }
}

/// Split the vocabulary, in id order, into its characters and which special
/// tokens follow them.
fn split_specials(vocab: &[(&str, u32)]) -> Result<(Vec<char>, bool, bool), String> {
    let single = |word: &str| {
        let mut it = word.chars();
        it.next().filter(|_| it.next().is_none())
    };
    if let Some((word, _)) = vocab
        .iter()
        .find(|&&(w, _)| single(w).is_none() && w != EOT && w != UNK)
    {
        return Err(format!(
            "vocabulary entry {} is not one character",
            bpe::show_str(word)
        ));
    }
    let chars: Vec<char> = vocab.iter().map_while(|&(w, _)| single(w)).collect();
    let specials: Vec<&str> = vocab[chars.len()..].iter().map(|&(w, _)| w).collect();
    match specials.as_slice() {
        [] => Ok((chars, false, false)),
        [EOT] => Ok((chars, true, false)),
        [UNK] => Ok((chars, false, true)),
        [EOT, UNK] => Ok((chars, true, true)),
        _ => Err("special tokens must follow the characters, <|endoftext|> before <unk>".into()),
    }
}

impl Tokenizer for CharTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(text.len());
        let mut unknown = std::collections::BTreeSet::new();
        for c in text.chars() {
            let known = match self.ascii_ids.get(c as usize) {
                Some(&id) => (id != NONE).then_some(id),
                None => self.ids.get(&c).copied(),
            };
            match (known, self.unk_id()) {
                (Some(id), _) | (None, Some(id)) => ids.push(id),
                (None, None) => {
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
            match self.chars.get(id as usize) {
                Some(&c) => out.push(c),
                None if Some(id) == self.eot_id() => out.push_str(EOT),
                None if Some(id) == self.unk_id() => out.push_str(UNK),
                None => out.push(char::REPLACEMENT_CHARACTER),
            }
        }
        out.into_bytes()
    }

    fn vocab_size(&self) -> usize {
        self.chars.len() + self.has_eot as usize + self.has_unk as usize
    }

    fn eot_token(&self) -> Option<u32> {
        self.eot_id()
    }

    /// `<|endoftext|>` and `<unk>`, the only specials a character vocabulary has.
    fn special_token(&self, content: &str) -> Option<u32> {
        match content {
            EOT => self.eot_id(),
            UNK => self.unk_id(),
            _ => None,
        }
    }

    fn kind(&self) -> &'static str {
        "char"
    }

    fn save(&self, path: &Path) -> Result<()> {
        let specials: Vec<(u32, &str)> = [(self.eot_id(), EOT), (self.unk_id(), UNK)]
            .into_iter()
            .filter_map(|(id, text)| Some((id?, text)))
            .collect();
        let vocab: serde_json::Map<String, serde_json::Value> = self
            .chars
            .iter()
            .enumerate()
            .map(|(i, c)| (c.to_string(), i.into()))
            .chain(specials.iter().map(|&(id, t)| (t.to_string(), id.into())))
            .collect();
        let added_tokens: Vec<serde_json::Value> = specials
            .iter()
            .map(|&(id, content)| {
                serde_json::json!({
                    "id": id, "content": content, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": true
                })
            })
            .collect();
        let json = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added_tokens,
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

    #[test]
    fn special_tokens_follow_the_characters_and_round_trip() {
        let tok = CharTokenizer::with_specials(vec!['a', 'b'], true, true).unwrap();
        assert_eq!(
            (tok.eot_id(), tok.unk_id(), tok.vocab_size()),
            (Some(2), Some(3), 4)
        );
        assert_eq!(tok.encode("abz").unwrap(), vec![0, 1, 3]);
        assert_eq!(tok.decode(&[2, 0, 3]), "<|endoftext|>a<unk>");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        tok.save(&path).unwrap();
        assert_eq!(CharTokenizer::load(&path).unwrap(), tok);
        let eot_only = CharTokenizer::with_specials(vec!['a'], true, false).unwrap();
        eot_only.save(&path).unwrap();
        let loaded = CharTokenizer::load(&path).unwrap();
        assert_eq!((loaded.eot_token(), loaded.vocab_size()), (Some(1), 2));
        assert!(
            loaded.encode("b").is_err(),
            "no <unk>: unknown characters fail"
        );
    }
}
