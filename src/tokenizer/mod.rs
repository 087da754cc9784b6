//! Tokenizers: text to token ids and back.
//!
//! Every tokenizer implements [`Tokenizer`]; a run directory stores its tokenizer
//! as `tokenizer.json` in the Hugging Face format, and [`load`] reads it back.
//!
//! Three kinds: character-level ([`CharTokenizer`], vocabulary built from the
//! training text), lmforge's own fast byte-level BPE ([`BpeTokenizer`]: GPT-2's
//! via [`gpt2`], one trained with [`train`], or a GPT-2-style Hugging Face
//! `tokenizer.json`), and any other Hugging Face `tokenizer.json` run by the
//! `tokenizers` crate ([`HfTokenizer`]: Llama 3, Qwen2, SentencePiece-style
//! Llama 2 and Mistral files).

pub mod bpe;
pub mod char;
pub mod hf;
pub mod pretokenize;
pub mod train;

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

pub use self::bpe::{BpeTokenizer, gpt2};
pub use self::char::CharTokenizer;
pub use self::hf::HfTokenizer;
pub use self::pretokenize::Pattern;

/// Turns text into token ids and token ids back into bytes.
pub trait Tokenizer: Send + Sync {
    /// Encode `text` to token ids; fails on text the vocabulary cannot express.
    fn encode(&self, text: &str) -> Result<Vec<u32>>;
    /// The bytes the ids stand for. Byte-level tokenizers may cut a UTF-8
    /// character between two tokens, so this returns bytes, not a `String`.
    fn decode_bytes(&self, ids: &[u32]) -> Vec<u8>;
    /// Number of distinct token ids (the model's `vocab_size` must be at least this).
    fn vocab_size(&self) -> usize;
    /// A short name for logs and run metadata, e.g. `char` or `gpt2`.
    fn kind(&self) -> &'static str;
    /// The end-of-text token that separates documents, if the vocabulary has one.
    fn eot_token(&self) -> Option<u32> {
        None
    }
    /// The id of the special token `content` (e.g. `<|endoftext|>`,
    /// `<|user|>`), if the vocabulary has it as a special token.
    fn special_token(&self, content: &str) -> Option<u32> {
        let _ = content;
        None
    }
    /// Encode `text` with special tokens treated as plain text, so that text
    /// typed by a user can never produce a control token. Tokenizers whose
    /// [`Tokenizer::encode`] never produces specials use it as is.
    fn encode_ordinary(&self, text: &str) -> Result<Vec<u32>> {
        self.encode(text)
    }
    /// A copy with special tokens appended (those missing) at ids
    /// `vocab_size()..`: how fine-tuning adds the chat template's tokens.
    fn with_specials(&self, names: &[&str]) -> Result<Box<dyn Tokenizer>> {
        let _ = names;
        Err(Error::Config(format!(
            "the {} tokenizer cannot add special tokens; conversations (--sft) need a BPE tokenizer such as GPT-2's",
            self.kind()
        )))
    }
    /// Write the tokenizer as a Hugging Face `tokenizer.json` (atomically).
    fn save(&self, path: &Path) -> Result<()>;

    /// Encode one long text using up to `chunks` rayon tasks; the same ids as
    /// [`Tokenizer::encode`]. Tokenizers that cannot split safely encode serially.
    fn encode_parallel(&self, text: &str, chunks: usize) -> Result<Vec<u32>> {
        let _ = chunks;
        self.encode(text)
    }

    /// Decode to text, replacing bytes that are not valid UTF-8.
    fn decode(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.decode_bytes(ids)).into_owned()
    }
}

/// Load a `tokenizer.json`, told apart by `model.type`:
/// - `WordLevel`: a character-level one saved by [`CharTokenizer`];
/// - `BPE`: lmforge's own fast byte-level BPE ([`BpeTokenizer`]) when the file
///   uses only what it implements exactly (GPT-2-style files: ByteLevel, or a
///   Split with the GPT-2 or GPT-4 regex then ByteLevel, no normalizer, no byte
///   fallback, special added tokens, a token for each of the 256 bytes); any
///   other BPE file (Llama 3, Qwen2, SentencePiece-style Llama 2 / Mistral, a
///   byte-level vocabulary trained without the full byte alphabet) goes to Hugging Face's
///   `tokenizers` ([`HfTokenizer`]);
/// - `Unigram`, `WordPiece`: [`HfTokenizer`].
///
/// The file is untrusted: a malformed one is an [`Error::Format`] that names
/// the file and what is wrong, never a panic.
pub fn load(path: &Path) -> Result<Box<dyn Tokenizer>> {
    let json = bpe::read_json(path)?;
    match json["model"]["type"].as_str() {
        Some("WordLevel") => Ok(Box::new(CharTokenizer::from_hf_json(&json, path)?)),
        Some("BPE") => match BpeTokenizer::read_hf_json(&json, path)? {
            Ok(own) => Ok(Box::new(own)),
            Err(not_own) => Ok(Box::new(HfTokenizer::from_hf_json(
                &json,
                path,
                Some(&not_own),
            )?)),
        },
        Some("Unigram" | "WordPiece") => {
            Ok(Box::new(HfTokenizer::from_hf_json(&json, path, None)?))
        }
        _ => Err(Error::format(
            path,
            bpe::expected(
                "model.type",
                &json["model"]["type"],
                "\"WordLevel\" (char), \"BPE\", \"Unigram\" or \"WordPiece\"",
            ),
        )),
    }
}

/// What a `--tokenizer` argument names, parsed once (by the command line)
/// and stored in run and shard metadata as its string form: `char`, `gpt2`, or a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerSpec {
    /// A character vocabulary built from the training text itself.
    Char,
    /// GPT-2's byte-level BPE (tiktoken's `gpt2`), embedded in the binary.
    Gpt2,
    /// A `tokenizer.json` file.
    File(PathBuf),
}

impl std::str::FromStr for TokenizerSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "" => Err(Error::Config(
                "--tokenizer is empty: use char, gpt2 or the path of a tokenizer.json".into(),
            )),
            "char" => Ok(TokenizerSpec::Char),
            "gpt2" => Ok(TokenizerSpec::Gpt2),
            path => Ok(TokenizerSpec::File(PathBuf::from(path))),
        }
    }
}

impl std::fmt::Display for TokenizerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenizerSpec::Char => f.write_str("char"),
            TokenizerSpec::Gpt2 => f.write_str("gpt2"),
            TokenizerSpec::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl serde::Serialize for TokenizerSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for TokenizerSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl TokenizerSpec {
    /// The tokenizer this names. A `char` vocabulary is built from the
    /// training text, so the caller handles [`TokenizerSpec::Char`] itself;
    /// here it is an error.
    pub fn load(&self) -> Result<Box<dyn Tokenizer>> {
        match self {
            TokenizerSpec::Gpt2 => Ok(Box::new(gpt2()?)),
            TokenizerSpec::Char => Err(Error::Config(
                "a `char` tokenizer is built from the training text and cannot be loaded by name; \
                 pass the tokenizer.json of a run instead"
                    .into(),
            )),
            TokenizerSpec::File(path) => load(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print_back() {
        for text in ["char", "gpt2", "runs/x/tokenizer.json"] {
            let spec: TokenizerSpec = text.parse().unwrap();
            assert_eq!(spec.to_string(), text);
        }
        assert_eq!(
            "gpt2".parse::<TokenizerSpec>().unwrap(),
            TokenizerSpec::Gpt2
        );
        assert!("".parse::<TokenizerSpec>().is_err());
        let json = serde_json::to_string(&TokenizerSpec::Char).unwrap();
        assert_eq!(json, "\"char\"");
        assert_eq!(
            serde_json::from_str::<TokenizerSpec>(&json).unwrap(),
            TokenizerSpec::Char
        );
    }
}
