//! The one document reader: every command that reads text (`train --data`,
//! `prepare`, `tokenizer train`, `tokenizer encode`) reads it through here, so
//! they all see the same documents, cut and normalised the same way.
//!
//! # Inputs
//!
//! An input argument is a file, a directory (every file under it,
//! recursively, sorted by path; names starting with `.` are skipped) or a
//! glob pattern ([`expand_inputs`]).
//!
//! # Formats
//!
//! Each stream's format is detected from its first bytes, then its name
//! ([`format`]): gzip, xz and zstd are decompressed and detected again; a tar
//! yields its regular files, each detected again (so `.tar.xz`, `.jsonl.gz`
//! and OpenWebText's tar of `.xz` files each holding a tar of `.txt` are
//! read); JSON Lines gives one document per record (the `text_field` string);
//! a Parquet file one document per row of that column (top-level files only,
//! as Parquet is read from its end); anything else is plain text, one document
//! per file (or tar member). Nothing is extracted to disk.
//!
//! # Pieces and normalisation
//!
//! Documents are handed on as [`Piece`]s of at most [`PIECE_BYTES`], so
//! memory stays flat whatever the input: cut after the window's last newline
//! between two non-white-space characters (where the pre-tokenizer cuts too,
//! so the ids equal those of the whole text), else after its last newline
//! followed by a non-white-space character, else hard at the size limit, on
//! a UTF-8 character boundary (ids next to a hard cut may differ from those
//! of the whole text). [`pieces`] gives the details. Every piece is normalised, and this is the only place
//! text is normalised: a byte-order mark at the start of a document is
//! removed, and CRLF becomes LF. A lone `\r` is kept.
//!
//! # The train/validation split
//!
//! With a `val_fraction` f, a document whose length is known ahead (a
//! file, a tar member, a JSON Lines record, a Parquet row, or the text of a
//! compressed input file, measured by a first pass) and that holds at
//! least 1/[`TAIL_SHARE`] of the corpus is cut in two: its head trains, its
//! last f validates (cut after a newline where one follows the mark, see
//! [`pieces::tail_cut`]). Any other document goes whole to one split by a
//! hash of (seed, input name, document number). So one file or a few files
//! give f of their text to validation, and many documents about f of them.
//!
//! # Bounds and bad data
//!
//! A JSON Lines record longer than [`MAX_RECORD_BYTES`] is an error naming
//! the file and line; with `--on-bad-archive skip` it is skipped (without
//! being read into memory) and listed with the corrupt archives. Invalid
//! UTF-8 is an error naming the file (or `archive:member`) and the byte
//! offset, or, with `--on-bad-utf8 skip`, the rest of that document is
//! skipped and counted. A corrupt or truncated archive is an error, or is
//! skipped and listed.

mod archive;
mod format;
mod inputs;
mod jsonl;
mod parquet;
pub mod pieces;
mod reader;

pub use self::inputs::{InputFile, expand_inputs};
pub use self::pieces::split_text;
pub use self::reader::{
    Blob, InputStats, MAX_BLOB, Piece, Unit, expand_blob, read_all, read_input, read_stream,
};

/// The UTF-8 byte-order mark some editors put at the start of a file: not
/// text, removed wherever a file starts (text, JSON Lines, conversations).
pub const BOM: &str = "\u{feff}";

/// `text` without a leading [`BOM`].
pub fn strip_bom(text: &str) -> &str {
    text.strip_prefix(BOM).unwrap_or(text)
}

/// `bytes` without a leading [`BOM`].
pub fn strip_bom_bytes(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(BOM.as_bytes()).unwrap_or(bytes)
}

/// Documents are cut into pieces of at most this many bytes.
pub const PIECE_BYTES: usize = 1 << 20;

/// A JSON Lines record (one line) may be at most this long.
pub const MAX_RECORD_BYTES: usize = 64 << 20;

/// What to do with a bad document or archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBad {
    /// Stop with an error naming the file (and byte offset or line).
    Error,
    /// Skip it, count it and go on.
    Skip,
}

/// Which split a document goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
}

/// How to read inputs and split their documents.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// The JSON Lines field (or Parquet column) holding a document's text.
    pub text_field: String,
    pub on_bad_utf8: OnBad,
    pub on_bad_archive: OnBad,
    /// The share of the text that goes to [`Split::Val`]: documents
    /// holding at least 1/[`TAIL_SHARE`] of `corpus_bytes` give it their
    /// tail, the others go whole to one split by a hash of (seed, input
    /// name, document number).
    pub val_fraction: f64,
    pub seed: u64,
    /// The size of every input together, in bytes (what decides which
    /// documents are split at their tail).
    pub corpus_bytes: u64,
}

/// A document of known length holding at least 1/`TAIL_SHARE` of the corpus
/// is split at its tail. Smaller ones go whole to one split: with weights
/// `w_i` (their shares of the text), the validation share has variance
/// `f (1 - f) Σ w_i² ≤ f (1 - f) / TAIL_SHARE`, a standard deviation under
/// 1 percentage point for `f = 0.1`.
pub const TAIL_SHARE: u64 = 1024;

impl Default for ReadOptions {
    /// The `text` field, errors on bad data, every document in [`Split::Train`].
    fn default() -> Self {
        ReadOptions {
            text_field: "text".into(),
            on_bad_utf8: OnBad::Error,
            on_bad_archive: OnBad::Error,
            val_fraction: 0.0,
            seed: 0,
            corpus_bytes: 0,
        }
    }
}
