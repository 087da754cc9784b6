//! Tokenizers: text to token ids and back.
//!
//! Every tokenizer implements [`Tokenizer`]; a run directory stores its tokenizer
//! as `tokenizer.json` in the Hugging Face format, and [`load`] reads it back.
//!
//! Two kinds: character-level ([`CharTokenizer`], vocabulary built from the
//! training text) and byte-level BPE ([`BpeTokenizer`]: GPT-2's via [`gpt2`],
//! one trained with [`train`], or a Hugging Face `tokenizer.json`).

pub mod bpe;
pub mod char;
pub mod pretokenize;
pub mod train;

use crate::error::{Error, Result};
use std::path::Path;

pub use self::bpe::{BpeTokenizer, gpt2};
pub use self::char::CharTokenizer;
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

/// Load a `tokenizer.json`: a character-level one saved by [`CharTokenizer`]
/// (`WordLevel` model) or a byte-level BPE one (`BPE` model), told apart by
/// `model.type`.
pub fn load(path: &Path) -> Result<Box<dyn Tokenizer>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::format(path, format!("not valid JSON: {e}")))?;
    match json["model"]["type"].as_str() {
        Some("WordLevel") => Ok(Box::new(CharTokenizer::load(path)?)),
        Some("BPE") => Ok(Box::new(BpeTokenizer::from_hf_json(&json, path)?)),
        other => Err(Error::format(
            path,
            format!("model.type is {other:?}; expected \"WordLevel\" (char) or \"BPE\""),
        )),
    }
}

/// The tokenizer a command-line `--tokenizer` names: `gpt2`, or the path of a
/// `tokenizer.json`. A `char` vocabulary is built from the training text, so
/// the caller handles `char` itself; here it is an error.
pub fn from_spec(spec: &str) -> Result<Box<dyn Tokenizer>> {
    match spec {
        "gpt2" => Ok(Box::new(gpt2()?)),
        "char" => Err(Error::Config(
            "a `char` tokenizer is built from the training text and cannot be loaded by name; \
             pass the tokenizer.json of a run instead"
                .into(),
        )),
        path => load(Path::new(path)),
    }
}
