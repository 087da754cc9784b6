//! `lmforge prepare`: turn text corpora (plain, compressed, tar, JSON Lines,
//! Parquet) into token shards ([`crate::data::shards`]) with memory that does
//! not grow with the corpus.
//!
//! Steps:
//! 1. Expand the inputs ([`documents::expand_inputs`]).
//! 2. Open the output directory ([`resume`]): a new one gets its tokenizer
//!    (`tokenizer_for`, the one call site): for `char`, a first streaming pass
//!    counts the characters ([`vocab`]); `<|endoftext|>` follows the sorted
//!    characters, and with `--char-vocab-max N` only the N most frequent
//!    characters are kept, plus `<unk>`.
//! 3. Stream documents ([`documents`]) through the [`pipeline`]: the
//!    end-of-text token goes before every document (as in llm.c) and before
//!    a document's validation tail; a document holding at least
//!    1/[`TAIL_SHARE`] of the corpus gives its last `--val-fraction` to
//!    validation, any other goes whole to train or val by a hash of (seed,
//!    input file name, document number) (see [`documents`]), and the tokens
//!    are appended to the current shard of that split ([`output`]). A split
//!    far from the fraction asked for is reported
//!    ([`PrepareReport::split_warning`]). (Documents inside a compressed tar member up
//!    to [`documents::MAX_BLOB`], which a worker expands, are numbered within
//!    the member, keyed by `input name:member path`.)
//!
//! Resuming: a shard is renamed into place only when complete, and an input is
//! recorded in `manifest.json` only after every shard holding its tokens is
//! complete and listed. Shards roll over at about `shard_tokens`; the manifest
//! is updated at the end of the first input after a roll-over (closing the
//! partly-filled shards) and at the very end. Re-running with the same
//! settings deletes shard files the manifest does not list, skips finished
//! inputs and goes on; at most the inputs since the last update are read again.
//! The manifest says `complete` only once every input is read, so `train`
//! never takes an interrupted directory for the whole corpus. One `prepare`
//! at a time writes a directory ([`crate::rundir::RunLock`]).

pub mod output;
pub mod pipeline;
pub mod progress;
pub mod resume;
pub mod vocab;

pub use crate::data::documents::{OnBad, Split, TAIL_SHARE};

use crate::data::documents::{self, InputFile, ReadOptions};
use crate::data::shards::{MANIFEST_FILE, PrepareSettings, SPLIT_RULE, TOKENIZER_FILE};
use crate::error::{Error, Result};
use crate::tokenizer::{Tokenizer, TokenizerSpec};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Everything `lmforge prepare` needs.
#[derive(Debug, Clone)]
pub struct PrepareOptions {
    /// Files, directories and glob patterns.
    pub inputs: Vec<String>,
    pub tokenizer: TokenizerSpec,
    pub out: PathBuf,
    pub val_fraction: f64,
    pub seed: u64,
    /// Worker threads for tokenizing (the reader has a thread of its own).
    pub threads: usize,
    /// The JSON Lines field holding a document's text.
    pub text_field: String,
    pub on_bad_utf8: OnBad,
    pub on_bad_archive: OnBad,
    /// Keep only this many characters (the most frequent) plus `<unk>`.
    pub char_vocab_max: Option<usize>,
    /// A shard is closed once it holds this many tokens.
    pub shard_tokens: u64,
    /// Show progress on stderr: a bar on a terminal, else a line every
    /// [`progress::LINE_EVERY`].
    pub progress: bool,
}

impl PrepareOptions {
    /// Defaults for everything but the inputs, tokenizer and output directory.
    pub fn new(inputs: Vec<String>, tokenizer: TokenizerSpec, out: &Path) -> Self {
        PrepareOptions {
            inputs,
            tokenizer,
            out: out.to_path_buf(),
            val_fraction: 0.1,
            seed: 1337,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            text_field: "text".into(),
            on_bad_utf8: OnBad::Error,
            on_bad_archive: OnBad::Error,
            char_vocab_max: None,
            shard_tokens: 100_000_000,
            progress: false,
        }
    }

    fn check(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.val_fraction) {
            return Err(Error::Config(format!(
                "--val-fraction {} must be in [0, 1)",
                self.val_fraction
            )));
        }
        if self.inputs.is_empty() {
            return Err(Error::Config("no inputs given".into()));
        }
        if self.threads == 0 {
            return Err(Error::Config("--threads must be at least 1".into()));
        }
        if self.shard_tokens == 0 {
            return Err(Error::Config("--shard-tokens must be at least 1".into()));
        }
        if self.char_vocab_max.is_some() && self.tokenizer != TokenizerSpec::Char {
            return Err(Error::Config(
                "--char-vocab-max only applies to --tokenizer char".into(),
            ));
        }
        Ok(())
    }

    fn settings(&self) -> PrepareSettings {
        PrepareSettings {
            tokenizer: self.tokenizer.to_string(),
            char_vocab_max: self.char_vocab_max,
            val_fraction: self.val_fraction,
            seed: self.seed,
            text_field: self.text_field.clone(),
            split: SPLIT_RULE.into(),
        }
    }

    /// How to read `inputs`, all of which make up the corpus.
    fn read_options(&self, inputs: &[InputFile]) -> ReadOptions {
        ReadOptions {
            text_field: self.text_field.clone(),
            on_bad_utf8: self.on_bad_utf8,
            on_bad_archive: self.on_bad_archive,
            val_fraction: self.val_fraction,
            seed: self.seed,
            corpus_bytes: inputs.iter().map(|i| i.bytes).sum(),
        }
    }
}

/// What a `prepare` run did.
#[derive(Debug, Clone, Default)]
pub struct PrepareReport {
    pub inputs_read: usize,
    /// Inputs a previous run had finished.
    pub inputs_skipped: usize,
    pub documents: u64,
    /// Documents split at their tail (the rest went whole to one split).
    pub tail_split: u64,
    pub train_tokens: u64,
    pub val_tokens: u64,
    pub bytes_read: u64,
    pub skipped_bad_utf8: u64,
    /// `name: reason` for each corrupt archive (or over-long record) skipped.
    pub bad_archives: Vec<String>,
    pub vocab_size: usize,
    pub seconds: f64,
    /// Why the validation share is far from `--val-fraction`, if it is.
    pub split_warning: Option<String>,
}

/// Run `lmforge prepare`.
pub fn prepare(opts: &PrepareOptions) -> Result<PrepareReport> {
    let start = Instant::now();
    opts.check()?;
    let all_inputs = documents::expand_inputs(&opts.inputs, Some(&opts.out))?;
    if all_inputs.is_empty() {
        return Err(Error::Config(format!(
            "no input files found in {}",
            opts.inputs.join(" ")
        )));
    }
    let _lock = crate::rundir::RunLock::acquire(&opts.out, "lmforge prepare")?;
    let (mut manifest, tokenizer) = resume::open_output(opts, &all_inputs)?;
    let todo = resume::unfinished(&manifest, &all_inputs, &opts.out)?;
    let manifest_path = opts.out.join(MANIFEST_FILE);
    manifest.inputs = Some(manifest.finished_inputs.len() + todo.len());
    manifest.complete = todo.is_empty();
    manifest.save(&manifest_path)?;
    let mut report = PrepareReport {
        inputs_skipped: all_inputs.len() - todo.len(),
        vocab_size: tokenizer.vocab_size(),
        ..Default::default()
    };

    let total_bytes = todo.iter().map(|i| i.bytes).sum();
    let mut shown = progress::Progress::new(opts.progress, total_bytes, "tokenizing");
    let bytes_read = AtomicU64::new(0);
    let dtype = manifest.dtype;
    let work = |pieces| output::tokenize_batch(tokenizer.as_ref(), dtype, pieces);
    let mut sink = output::Sink::new(&opts.out, &mut manifest, &todo, opts.shard_tokens);
    pipeline::run(
        &todo,
        &opts.read_options(&all_inputs),
        opts.threads,
        &bytes_read,
        &work,
        &mut |item| {
            sink.receive(item, &mut report)?;
            let bytes = bytes_read.load(Ordering::Relaxed);
            shown.update(bytes, sink.tokens_written(), report.documents);
            Ok(())
        },
    )?;
    shown.finish();
    manifest.complete = true;
    manifest.save(&manifest_path)?;
    report.train_tokens = manifest.train.iter().map(|s| s.tokens).sum();
    report.val_tokens = manifest.val.iter().map(|s| s.tokens).sum();
    if report.train_tokens + report.val_tokens == 0 {
        return Err(Error::Data(format!(
            "no text found in the inputs ({}); nothing to train on",
            opts.inputs.join(" ")
        )));
    }
    report.bytes_read = bytes_read.load(Ordering::Relaxed);
    report.seconds = start.elapsed().as_secs_f64();
    report.split_warning = split_warning(opts.val_fraction, &report);
    Ok(report)
}

/// A validation share off by more than a quarter of `--val-fraction` (or
/// any, when it is 0) gets a warning saying why.
fn split_warning(fraction: f64, report: &PrepareReport) -> Option<String> {
    let total = report.train_tokens + report.val_tokens;
    let share = report.val_tokens as f64 / total.max(1) as f64;
    if (share - fraction).abs() <= fraction / 4.0 {
        return None;
    }
    let whole = report.documents - report.tail_split;
    Some(format!(
        "validation holds {:.1}% of the tokens, not the {:.1}% --val-fraction asks for: {} \
         documents were split at their tail and {whole} went whole to one split (those \
         under 1/{TAIL_SHARE} of the corpus, or of unknown length inside compressed archive \
         members), too few to average out. Decompress such an archive, or give more documents",
        100.0 * share,
        100.0 * fraction,
        report.tail_split,
    ))
}

/// The one place a `--tokenizer` argument becomes a tokenizer, saved as
/// `OUT/tokenizer.json`.
fn tokenizer_for(opts: &PrepareOptions, inputs: &[InputFile]) -> Result<Box<dyn Tokenizer>> {
    let path = opts.out.join(TOKENIZER_FILE);
    match &opts.tokenizer {
        TokenizerSpec::Char => {
            let tokenizer = vocab::char_tokenizer(inputs, opts)?;
            tokenizer.save(&path)?;
            Ok(Box::new(tokenizer))
        }
        TokenizerSpec::Gpt2 => {
            let tokenizer = TokenizerSpec::Gpt2.load()?;
            tokenizer.save(&path)?;
            Ok(tokenizer)
        }
        TokenizerSpec::File(source) => {
            let bytes = std::fs::read(source).map_err(|e| Error::io(source, e))?;
            crate::tokenizer::load(source)?; // fail before copying something unreadable
            crate::fsutil::write_atomic_bytes(&path, &bytes)?;
            crate::tokenizer::load(&path)
        }
    }
}
