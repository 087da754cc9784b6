//! `manifest.json`: what a prepared directory holds, as pretty-printed JSON
//! with the fields of [`Manifest`]:
//!
//! ```text
//! { "format": "lmforge-shards", "version": 1,
//!   "tokenizer_kind": "char", "tokenizer_id": <FNV-1a 64 of tokenizer.json>,
//!   "vocab_size": 66, "eot_token": 65, "dtype": "u16",
//!   "settings": { "tokenizer", "char_vocab_max", "val_fraction", "seed", "text_field", "split" },
//!   "train": [{ "file": "train_000000.bin", "tokens": 123 }, ...], "val": [...],
//!   "finished_inputs": [{ "path", "bytes", "documents", "skipped_bad_utf8", "bad_archive" }, ...],
//!   "inputs": 12, "complete": false }
//! ```
//!
//! `complete` is false from the start of a `prepare` run until every one of
//! its `inputs` is read: shards of an interrupted run are never taken for
//! the whole corpus. (Manifests written before these two fields existed
//! read as complete.)
//!
//! `settings` and `finished_inputs` are what `prepare` needs to resume; they
//! live here, with the rest of the format, so that reading shards never
//! depends on the code that writes them.

use super::header::Dtype;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Version of `manifest.json` written by this code.
pub const MANIFEST_VERSION: u32 = 1;
/// The manifest's file name inside a prepared directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The tokenizer's file name inside a prepared directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// One shard as listed in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// File name inside the prepared directory.
    pub file: String,
    pub tokens: u64,
}

/// An input file whose documents are all in listed shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinishedInput {
    /// The path, as found by `prepare` (made absolute).
    pub path: String,
    /// Its size in bytes when it was read: a file of another size has changed.
    pub bytes: u64,
    /// Its modification time when it was read (nanoseconds since 1970;
    /// absent in manifests of earlier versions): another time means it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_ns: Option<u64>,
    pub documents: u64,
    /// Documents skipped for invalid UTF-8 (`--on-bad-utf8 skip`).
    pub skipped_bad_utf8: u64,
    /// What of this input was skipped under `--on-bad-archive skip` (corrupt
    /// archives, over-long JSON Lines records), if anything.
    pub bad_archive: Option<String>,
}

/// The settings a prepared directory was made with; a resume must use the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrepareSettings {
    /// `char` or the path given to `--tokenizer`.
    pub tokenizer: String,
    pub char_vocab_max: Option<usize>,
    pub val_fraction: f64,
    pub seed: u64,
    pub text_field: String,
    /// How documents were assigned to the splits: [`SPLIT_RULE`], or
    /// `document` (each document whole, by a hash) in manifests written
    /// before the rule existed.
    #[serde(default = "split_by_document")]
    pub split: String,
}

/// The split rule `prepare` uses now: documents of at least 1/1024 of the
/// corpus give their tail to validation, smaller ones go whole to one split
/// (see [`crate::data::documents`]).
pub const SPLIT_RULE: &str = "document-or-tail/1024";

/// Manifests of earlier versions assigned every document whole.
fn split_by_document() -> String {
    "document".into()
}

/// `manifest.json`: what a prepared directory holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always `lmforge-shards`.
    pub format: String,
    pub version: u32,
    pub tokenizer_kind: String,
    /// FNV-1a 64 of `tokenizer.json`, also in every shard header.
    pub tokenizer_id: u64,
    pub vocab_size: usize,
    /// The token placed before every document, if the tokenizer has one.
    pub eot_token: Option<u32>,
    pub dtype: Dtype,
    pub settings: PrepareSettings,
    pub train: Vec<ShardEntry>,
    pub val: Vec<ShardEntry>,
    pub finished_inputs: Vec<FinishedInput>,
    /// How many inputs the directory is prepared from: those finished and
    /// those the last `prepare` run still had to read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<usize>,
    /// Every input is read: false while `prepare` runs, and after it was
    /// interrupted.
    #[serde(default = "complete_if_not_recorded")]
    pub complete: bool,
}

/// Manifests of earlier versions did not record completion.
fn complete_if_not_recorded() -> bool {
    true
}

impl Manifest {
    pub const FORMAT: &'static str = "lmforge-shards";

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::format(path, format!("not valid JSON: {e}")))?;
        if value["format"] != Self::FORMAT {
            return Err(Error::format(path, "not an lmforge shard manifest"));
        }
        if value["version"] != MANIFEST_VERSION {
            return Err(Error::format(
                path,
                format!(
                    "manifest version {}; this lmforge reads version {MANIFEST_VERSION}",
                    value["version"]
                ),
            ));
        }
        serde_json::from_value(value).map_err(|e| Error::format(path, format!("bad manifest: {e}")))
    }

    /// `(inputs done, inputs)` of a directory `prepare` has not finished;
    /// `None` when it is complete.
    pub fn unfinished(&self) -> Option<(usize, usize)> {
        let done = self.finished_inputs.len();
        (!self.complete).then(|| (done, self.inputs.unwrap_or(done).max(done)))
    }

    /// Write atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).expect("a manifest always serialises");
        crate::fsutil::write_atomic_bytes(path, &bytes)
    }
}
