//! Tokenizers: text to token ids and back.
//!
//! Every tokenizer implements [`Tokenizer`]; a run directory stores its tokenizer
//! as `tokenizer.json` in the Hugging Face format, and [`load`] reads it back.

pub mod char;

use crate::error::Result;
use std::path::Path;

pub use self::char::CharTokenizer;

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

    /// Decode to text, replacing bytes that are not valid UTF-8.
    fn decode(&self, ids: &[u32]) -> String {
        String::from_utf8_lossy(&self.decode_bytes(ids)).into_owned()
    }
}

/// Load a tokenizer saved by [`Tokenizer::save`].
pub fn load(path: &Path) -> Result<Box<dyn Tokenizer>> {
    Ok(Box::new(CharTokenizer::load(path)?))
}
