//! Any Hugging Face `tokenizer.json`, run by Hugging Face's own `tokenizers`
//! crate: byte-level BPE with any split regex (Llama 3, Qwen2), SentencePiece-
//! style BPE with `▁` spaces and `<0xNN>` byte fallback (Llama 2, TinyLlama,
//! Mistral), normalizers, Unigram and WordPiece models, added tokens special or
//! not. [`super::load`] sends here the files lmforge's own byte-level BPE
//! ([`super::BpeTokenizer`], the fast GPT-2 path) does not implement exactly.
//!
//! What lmforge asks of a tokenizer, and how this one answers:
//! - [`Tokenizer::encode`]: `tokenizers`' encode with the added tokens in the
//!   text recognised, but without the post-processor's tokens (no BOS/EOS: the
//!   chat template or the training data adds those). Truncation and padding
//!   from the file are switched off: lmforge encodes whole documents.
//! - [`Tokenizer::encode_ordinary`]: the same with `encode_special_tokens`
//!   set, so special tokens in the text are plain text and typed text can never
//!   produce a control token. Added tokens that are not special (e.g. Qwen3's
//!   `<think>`) are vocabulary words and are still recognised, as in
//!   `tokenizers`.
//! - [`Tokenizer::decode`]: `tokenizers`' decode, special tokens kept.
//! - [`Tokenizer::decode_bytes`]: the bytes of each token, concatenated, for
//!   streaming one token at a time (a UTF-8 character may be cut between
//!   tokens). Each token's bytes come from the file's decoder applied to that
//!   token alone, as if it followed other text: the byte-level alphabet for
//!   `ByteLevel`, `<0xNN>` → the byte NN for `ByteFallback`, `Replace` (`▁` →
//!   space), `Metaspace`. Steps that act on the whole text only (`Strip` after
//!   `Fuse`, `Metaspace` dropping the first space) are left out, so a
//!   SentencePiece text keeps the space the pre-tokenizer put in front, which
//!   [`Tokenizer::decode`] takes off. `WordPiece` gives a space before each
//!   token that does not continue a word (`##`). Decoders that join tokens in
//!   other ways (CTC, BPE suffixes, regex replaces) give each token's own
//!   decode.
//! - A malformed file is an [`Error::Format`] naming the file. The crate
//!   trusts some fields: merges are checked before it sees them, and a panic
//!   inside it is caught and reported as an error.
//! - [`Tokenizer::eot_token`]: the first special token found among
//!   [`EOT_NAMES`] (`<|endoftext|>`, `<|end_of_text|>`, `</s>`, `<eos>`).
//! - [`Tokenizer::with_specials`]: `add_special_tokens`, which gives the
//!   missing ones the ids `vocab_size()..` in order.
//! - [`Tokenizer::encode_parallel`]: parts cut at newlines on rayon's threads
//!   for Llama-3/Qwen2-style byte-level files, serial for the others.

use super::Tokenizer;
use super::bpe::{byte_to_char, check_dense, merge_pair, show_json, show_str};
use crate::error::{Error, Result};
use rustc_hash::FxHashMap;
use serde_json::Value;
use std::path::Path;
use tokenizers::{AddedToken, Model};

/// Llama 3's pre-tokenizer regex (a `Split` before a `ByteLevel`).
pub const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's: Llama 3's with single digits.
pub const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The contents that name an end-of-text token, in order of preference.
pub const EOT_NAMES: [&str; 4] = ["<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>"];

/// A tokenizer run by the `tokenizers` crate (see the module documentation).
#[derive(Clone)]
pub struct HfTokenizer {
    kind: &'static str,
    /// Special tokens in the text are recognised.
    tokenizer: tokenizers::Tokenizer,
    /// The same tokenizer with `encode_special_tokens` set.
    ordinary: tokenizers::Tokenizer,
    /// The bytes of each id, as streaming decodes it.
    pieces: Vec<Vec<u8>>,
    /// The added tokens marked special, with their ids.
    specials: Vec<(String, u32)>,
    /// Whether a text cut just after a newline between two non-white-space
    /// characters encodes as the concatenation of its parts (see
    /// [`HfTokenizer::encodes_in_parallel`]).
    cuts_at_newlines: bool,
}

impl std::fmt::Debug for HfTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfTokenizer")
            .field("kind", &self.kind)
            .field("vocab_size", &self.pieces.len())
            .field("specials", &self.specials)
            .finish()
    }
}

impl HfTokenizer {
    /// Read a parsed `tokenizer.json` (from `path`, named in errors). The file
    /// is untrusted: what `tokenizers` refuses, or ids with gaps, is an
    /// [`Error::Format`]. `not_own` says why lmforge's own BPE did not take
    /// the file, added to the error so that both reasons are seen.
    pub fn from_hf_json(json: &Value, path: &Path, not_own: Option<&str>) -> Result<Self> {
        let bad = |message: String| {
            let message = match not_own {
                Some(own) => {
                    format!(
                        "{message} (lmforge's own byte-level BPE does not read it either: {own})"
                    )
                }
                None => message,
            };
            Error::format(path, message)
        };
        if json["model"]["type"] == "BPE" {
            check_bpe_merges(&json["model"]).map_err(bad)?;
        }
        // The error names the field at fault (e.g. `model.ignore_merges`).
        let tokenizer = guarded(|| serde_path_to_error::deserialize(json.clone()))
            .and_then(|read: std::result::Result<tokenizers::Tokenizer, _>| {
                read.map_err(|e| match e.path().to_string().as_str() {
                    "." => e.inner().to_string(),
                    path => format!("{path}: {}", e.inner()),
                })
            })
            .map_err(|e| bad(format!("Hugging Face tokenizers cannot read it: {e}")))?;
        check_added_ids(&json["added_tokens"], &tokenizer).map_err(bad)?;
        guarded(|| Self::new(tokenizer))
            .and_then(|made| made)
            .map_err(bad)
    }

    /// Read a `tokenizer.json` file with `tokenizers` (see [`Self::from_hf_json`]).
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_hf_json(&super::bpe::read_json(path)?, path, None)
    }

    /// Wrap a `tokenizers` tokenizer: switch off truncation and padding,
    /// check the ids, lay out each token's bytes.
    fn new(mut tokenizer: tokenizers::Tokenizer) -> std::result::Result<Self, String> {
        tokenizer
            .with_truncation(None)
            .map_err(|e| format!("cannot switch off truncation: {e}"))?;
        tokenizer.with_padding(None);
        let kind = match tokenizer.get_model() {
            tokenizers::ModelWrapper::BPE(_) => "hf-bpe",
            tokenizers::ModelWrapper::Unigram(_) => "hf-unigram",
            tokenizers::ModelWrapper::WordPiece(_) => "hf-wordpiece",
            tokenizers::ModelWrapper::WordLevel(_) => "hf-wordlevel",
        };
        let tokens = tokens_by_id(&tokenizer)?;
        let mut specials: Vec<(String, u32)> = tokenizer
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, token)| token.special)
            .map(|(id, token)| (token.content, id))
            .collect();
        specials.sort_by_key(|&(_, id)| id);
        let decoder = serde_json::to_value(tokenizer.get_decoder())
            .map_err(|e| format!("cannot read back the decoder: {e}"))?;
        let pieces = match DecodeStep::steps(&decoder) {
            Some(steps) => tokens
                .iter()
                .map(|t| DecodeStep::bytes(&steps, t))
                .collect(),
            None => (0u32..)
                .zip(&tokens)
                .map(
                    |(id, token)| match guarded(|| tokenizer.decode(&[id], false)) {
                        Ok(Ok(text)) => text.into_bytes(),
                        _ => token.clone().into_bytes(),
                    },
                )
                .collect(),
        };
        let cuts_at_newlines = cuts_at_newlines(&tokenizer)?;
        let mut ordinary = tokenizer.clone();
        ordinary.set_encode_special_tokens(true);
        Ok(HfTokenizer {
            kind,
            tokenizer,
            ordinary,
            pieces,
            specials,
            cuts_at_newlines,
        })
    }

    /// Whether [`Tokenizer::encode_parallel`] cuts the text: only for the
    /// pipelines known to give the same ids in parts: no normalizer or NFC,
    /// Llama 3's or Qwen2's split regex then ByteLevel, and added tokens
    /// that hold no newline and strip nothing. (Not SentencePiece layouts:
    /// each part would get its own `▁` in front.)
    pub fn encodes_in_parallel(&self) -> bool {
        self.cuts_at_newlines
    }

    /// The added tokens marked special, with their ids, by id.
    pub fn specials(&self) -> &[(String, u32)] {
        &self.specials
    }

    /// The `tokenizers` tokenizer inside.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.tokenizer
    }
}

/// Run `f`, turning a panic inside `tokenizers` into an error: the crate
/// trusts some fields of the file. (What would be worse than a panic, a merge
/// whose second part lacks the subword prefix, is refused before, by
/// [`check_bpe_merges`].)
fn guarded<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("no message");
        format!("Hugging Face tokenizers failed on it ({message})")
    })
}

/// Check a BPE model's merges the way the `tokenizers` crate assumes they
/// are: each `(a, b)` names two vocabulary entries, `b` starts with the
/// `continuing_subword_prefix` (if any), and `a` + `b` without that prefix is
/// in the vocabulary too. The crate would panic, or read a string cut inside
/// a character, on a file that breaks this.
fn check_bpe_merges(model: &Value) -> std::result::Result<(), String> {
    let (Some(vocab), Some(merges)) = (model["vocab"].as_object(), model["merges"].as_array())
    else {
        return Ok(()); // `tokenizers` reports the wrong types
    };
    let prefix = model["continuing_subword_prefix"].as_str().unwrap_or("");
    for (i, merge) in merges.iter().enumerate() {
        let Some((a, b)) = merge_pair(merge) else {
            continue; // likewise
        };
        let what = || format!("merge {i} ({})", show_json(merge));
        for part in [a, b] {
            if !vocab.contains_key(part) {
                return Err(format!(
                    "{} names {}, which is not in the vocabulary",
                    what(),
                    show_str(part)
                ));
            }
        }
        let Some(rest) = b.strip_prefix(prefix) else {
            return Err(format!(
                "{}: {} does not start with the continuing_subword_prefix {}",
                what(),
                show_str(b),
                show_str(prefix)
            ));
        };
        let merged = format!("{a}{rest}");
        if !vocab.contains_key(&merged) {
            return Err(format!(
                "{} makes {}, which is not in the vocabulary",
                what(),
                show_str(&merged)
            ));
        }
    }
    Ok(())
}

/// Check that each added token has the id the file gives it: `tokenizers`
/// ignores those ids (it numbers added tokens itself and only logs a
/// mismatch), and a model trained with the file's ids would read others.
fn check_added_ids(
    added: &Value,
    tokenizer: &tokenizers::Tokenizer,
) -> std::result::Result<(), String> {
    for (i, token) in added.as_array().into_iter().flatten().enumerate() {
        let (Some(content), Some(id)) = (token["content"].as_str(), token["id"].as_u64()) else {
            continue;
        };
        let given = tokenizer.token_to_id(content);
        if given.map(u64::from) != Some(id) {
            let given = given.map_or("none".to_string(), |g| g.to_string());
            return Err(format!(
                "added_tokens[{i}] ({}) has id {id}, but Hugging Face tokenizers gives it id {given}: \
                 the added tokens must be listed in id order after the vocabulary",
                show_str(content)
            ));
        }
    }
    Ok(())
}

/// See [`HfTokenizer::encodes_in_parallel`]. No piece of either regex spans
/// such a newline cut, and NFC composes nothing across a newline.
fn cuts_at_newlines(tokenizer: &tokenizers::Tokenizer) -> std::result::Result<bool, String> {
    let normalizer = serde_json::to_value(tokenizer.get_normalizer()).map_err(|e| e.to_string())?;
    let pre = serde_json::to_value(tokenizer.get_pre_tokenizer()).map_err(|e| e.to_string())?;
    let normalizer_ok = normalizer.is_null() || normalizer["type"] == "NFC";
    let steps = pre["pretokenizers"].as_array().map(Vec::as_slice);
    let pre_ok = match steps {
        Some([split, byte_level]) => {
            pre["type"] == "Sequence"
                && split["type"] == "Split"
                && split["behavior"] == "Isolated"
                && split["invert"] == false
                && [LLAMA3_SPLIT, QWEN2_SPLIT]
                    .contains(&split["pattern"]["Regex"].as_str().unwrap_or(""))
                && byte_level["type"] == "ByteLevel"
                && byte_level["use_regex"] == false
                && byte_level["add_prefix_space"] == false
        }
        _ => false,
    };
    let added_ok = tokenizer
        .get_added_tokens_decoder()
        .values()
        .all(|t| !t.content.contains('\n') && !t.lstrip && !t.rstrip && !t.single_word);
    Ok(normalizer_ok && pre_ok && added_ok)
}

/// Every id's token string (added tokens first, as `tokenizers` decodes),
/// after checking that the ids run from 0 with no gap.
fn tokens_by_id(tokenizer: &tokenizers::Tokenizer) -> std::result::Result<Vec<String>, String> {
    let added = tokenizer.get_added_tokens_decoder();
    let mut entries: Vec<(String, u32)> = tokenizer.get_model().get_vocab().into_iter().collect();
    entries.extend(added.iter().map(|(&id, t)| (t.content.clone(), id)));
    // Sorted, so that an error names the same entry every time.
    entries.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    let ids: Vec<u32> = entries.iter().map(|e| e.1).collect();
    let n = check_dense(&ids, |i| format!("token {}", show_str(&entries[i].0)))?;
    (0..n as u32)
        .map(|id| {
            tokenizer
                .id_to_token(id)
                .ok_or_else(|| format!("token id {id} has no token"))
        })
        .collect()
}

/// One step of a decoder, as it acts on a single token (see the module
/// documentation).
#[derive(Debug, Clone, PartialEq)]
enum DecodeStep {
    /// Characters of GPT-2's byte alphabet back to their bytes.
    ByteLevel,
    /// `<0xNN>` to the byte NN.
    ByteFallback,
    /// Replace a string by another (e.g. `▁` by a space).
    Replace(String, String),
    /// Strip up to `start`/`stop` copies of a character off each token's ends.
    Strip(char, usize, usize),
    /// WordPiece: a token with the prefix (`##`) continues a word, any
    /// other starts one after a space; `cleanup` joins punctuation back.
    WordPiece(String, bool),
}

impl DecodeStep {
    /// The per-token steps of a decoder, or `None` for one that joins tokens
    /// in another way. Steps after `Fuse` see the whole text as one token, so
    /// a `Strip` there only acts at the start or end of the whole text and
    /// is left out.
    fn steps(decoder: &Value) -> Option<Vec<DecodeStep>> {
        let mut steps = Vec::new();
        let mut fused = false;
        let list = match decoder["type"].as_str()? {
            "Sequence" => decoder["decoders"].as_array()?.iter().collect(),
            _ => vec![decoder],
        };
        for step in list {
            match step["type"].as_str()? {
                "ByteLevel" => steps.push(DecodeStep::ByteLevel),
                "ByteFallback" => steps.push(DecodeStep::ByteFallback),
                "Fuse" => fused = true,
                "Replace" => steps.push(DecodeStep::Replace(
                    step["pattern"]["String"].as_str()?.into(),
                    step["content"].as_str()?.into(),
                )),
                "Strip" if fused => {}
                "Strip" => steps.push(DecodeStep::Strip(
                    single_char(&step["content"])?,
                    step["start"].as_u64()? as usize,
                    step["stop"].as_u64()? as usize,
                )),
                "WordPiece" => steps.push(DecodeStep::WordPiece(
                    step["prefix"].as_str()?.into(),
                    step["cleanup"].as_bool()?,
                )),
                "Metaspace" => {
                    let replacement = single_char(&step["replacement"])?;
                    steps.push(DecodeStep::Replace(replacement.into(), " ".into()));
                }
                _ => return None,
            }
        }
        Some(steps)
    }

    /// The bytes of one token after `steps`. Once a step has made bytes
    /// (ByteLevel, ByteFallback), later text steps leave them as they are.
    fn bytes(steps: &[DecodeStep], token: &str) -> Vec<u8> {
        let mut text = token.to_string();
        for step in steps {
            match step {
                DecodeStep::ByteLevel => {
                    if let Some(bytes) = byte_level_bytes(&text) {
                        return bytes;
                    }
                }
                DecodeStep::ByteFallback => {
                    if let Some(byte) = fallback_byte(&text) {
                        return vec![byte];
                    }
                }
                DecodeStep::Replace(from, to) => text = text.replace(from.as_str(), to),
                DecodeStep::Strip(c, start, stop) => text = strip(&text, *c, *start, *stop),
                DecodeStep::WordPiece(prefix, cleanup) => {
                    text = match text.strip_prefix(prefix.as_str()) {
                        Some(rest) => rest.to_string(),
                        None => format!(" {text}"),
                    };
                    if *cleanup {
                        text = tokenizers::decoders::wordpiece::cleanup(&text);
                    }
                }
            }
        }
        text.into_bytes()
    }
}

/// A one-character string from a decoder's settings.
fn single_char(value: &Value) -> Option<char> {
    let mut chars = value.as_str()?.chars();
    let c = chars.next()?;
    chars.next().is_none().then_some(c)
}

/// The bytes a token of GPT-2's byte alphabet stands for; `None` if a
/// character is outside the alphabet (`tokenizers` then keeps the text).
fn byte_level_bytes(text: &str) -> Option<Vec<u8>> {
    use std::sync::OnceLock;
    static TABLE: OnceLock<FxHashMap<char, u8>> = OnceLock::new();
    let table = TABLE.get_or_init(|| byte_to_char().into_iter().zip(0..=255u8).collect());
    text.chars().map(|c| table.get(&c).copied()).collect()
}

/// The byte of a byte-fallback token `<0xNN>`.
fn fallback_byte(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok())?
}

/// `text` with up to `start` leading and `stop` trailing `c` taken off.
fn strip(text: &str, c: char, start: usize, stop: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    let head = chars.iter().take(start).take_while(|&&x| x == c).count();
    let rest = &chars[head..];
    let tail = rest
        .iter()
        .rev()
        .take(stop)
        .take_while(|&&x| x == c)
        .count();
    rest[..rest.len() - tail].iter().collect()
}

impl Tokenizer for HfTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        encode_with(&self.tokenizer, text)
    }

    fn encode_ordinary(&self, text: &str) -> Result<Vec<u32>> {
        encode_with(&self.ordinary, text)
    }

    /// Cut at newlines into about `chunks` parts encoded on rayon's
    /// threads, where [`HfTokenizer::encodes_in_parallel`]; else serial.
    fn encode_parallel(&self, text: &str, chunks: usize) -> Result<Vec<u32>> {
        use rayon::prelude::*;
        if chunks <= 1 || !self.cuts_at_newlines {
            return self.encode(text);
        }
        let cuts = super::pretokenize::safe_cuts(text, chunks);
        let parts: Vec<Result<Vec<u32>>> = cuts
            .par_windows(2)
            .map(|w| encode_with(&self.tokenizer, &text[w[0]..w[1]]))
            .collect();
        Ok(parts.into_iter().collect::<Result<Vec<_>>>()?.concat())
    }

    fn decode_bytes(&self, ids: &[u32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            match self.pieces.get(id as usize) {
                Some(piece) => out.extend_from_slice(piece),
                None => out.extend_from_slice(char::REPLACEMENT_CHARACTER.to_string().as_bytes()),
            }
        }
        out
    }

    /// `tokenizers`' own decode (special tokens kept); ids outside the
    /// vocabulary become U+FFFD, as in [`Tokenizer::decode_bytes`].
    fn decode(&self, ids: &[u32]) -> String {
        let n = self.pieces.len();
        if ids.iter().any(|&id| id as usize >= n) {
            return String::from_utf8_lossy(&self.decode_bytes(ids)).into_owned();
        }
        match guarded(|| self.tokenizer.decode(ids, false)) {
            Ok(Ok(text)) => text,
            _ => String::from_utf8_lossy(&self.decode_bytes(ids)).into_owned(),
        }
    }

    fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    fn kind(&self) -> &'static str {
        self.kind
    }

    fn eot_token(&self) -> Option<u32> {
        EOT_NAMES.iter().find_map(|name| self.special_token(name))
    }

    fn special_token(&self, content: &str) -> Option<u32> {
        self.specials
            .iter()
            .find(|(c, _)| c == content)
            .map(|&(_, id)| id)
    }

    fn with_specials(&self, names: &[&str]) -> Result<Box<dyn Tokenizer>> {
        if names.iter().any(|n| n.is_empty()) {
            return Err(Error::Data("a special token cannot be empty".into()));
        }
        let missing: Vec<AddedToken> = names
            .iter()
            .filter(|n| self.special_token(n).is_none())
            .map(|&n| AddedToken::from(n, true))
            .collect();
        let mut tokenizer = self.tokenizer.clone();
        guarded(|| tokenizer.add_special_tokens(missing))
            .and_then(|added| added.map_err(|e| e.to_string()))
            .map_err(|e| Error::Data(format!("cannot add the special tokens: {e}")))?;
        Ok(Box::new(HfTokenizer::new(tokenizer).map_err(Error::Data)?))
    }

    fn save(&self, path: &Path) -> Result<()> {
        let text = self
            .tokenizer
            .to_string(true)
            .map_err(|e| Error::Data(format!("cannot write the tokenizer as JSON: {e}")))?;
        crate::fsutil::write_atomic_bytes(path, text.as_bytes())
    }
}

/// Ids of `text`, without the post-processor's tokens.
fn encode_with(tokenizer: &tokenizers::Tokenizer, text: &str) -> Result<Vec<u32>> {
    let encoding = guarded(|| tokenizer.encode_fast(text, false))
        .and_then(|encoded| encoded.map_err(|e| e.to_string()))
        .map_err(|e| Error::Data(format!("the tokenizer cannot encode the text: {e}")))?;
    Ok(encoding.get_ids().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decoder_steps_act_on_one_token() {
        let llama = json!({"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]});
        let steps = DecodeStep::steps(&llama).unwrap();
        assert_eq!(steps.len(), 2, "the Strip after Fuse is left out");
        assert_eq!(DecodeStep::bytes(&steps, "▁Hello"), b" Hello");
        assert_eq!(DecodeStep::bytes(&steps, "<0xF0>"), [0xF0]);
        assert_eq!(DecodeStep::bytes(&steps, "<0xZZ>"), b"<0xZZ>");
        let byte_level = DecodeStep::steps(&json!({"type": "ByteLevel"})).unwrap();
        assert_eq!(DecodeStep::bytes(&byte_level, "Ġhi"), b" hi");
        assert_eq!(DecodeStep::bytes(&byte_level, "ð"), [0xF0]);
        assert_eq!(DecodeStep::bytes(&byte_level, "<|eot_id|>"), b"<|eot_id|>");
        assert!(DecodeStep::steps(&json!({"type": "WordPiece", "prefix": "##"})).is_none());
        assert!(DecodeStep::steps(&Value::Null).is_none());
    }

    #[test]
    fn strip_takes_at_most_the_counts() {
        assert_eq!(strip("  a  ", ' ', 1, 0), " a  ");
        assert_eq!(strip("  a  ", ' ', 5, 1), "a ");
        assert_eq!(strip("   ", ' ', 2, 2), "");
    }
}
