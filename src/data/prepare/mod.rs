//! `lmforge prepare`: turn text corpora (plain, compressed, tar, JSON Lines,
//! Parquet) into token shards ([`crate::data::shards`]) with memory that does
//! not grow with the corpus.
//!
//! Steps:
//! 1. Expand the inputs ([`documents::expand_inputs`]).
//! 2. Pick the tokenizer (`tokenizer_for`, the one call site): for `char`, a
//!    first streaming pass counts the characters ([`vocab`]); `<|endoftext|>`
//!    follows the sorted characters, and with `--char-vocab-max N` only the N
//!    most frequent characters are kept, plus `<unk>`.
//! 3. Stream documents ([`documents`]) through the [`pipeline`]: the end-of-text token goes
//!    before every document (as in llm.c), each document goes to train or val by
//!    a hash of (seed, input file name, document number), and the tokens are
//!    appended to the current shard of that split. (Documents inside a
//!    compressed tar member up to [`documents::MAX_BLOB`], which a worker expands,
//!    are numbered within the member, keyed by `input name:member path`.)
//!
//! Resuming: a shard is renamed into place only when complete, and an input is
//! recorded in `manifest.json` only after every shard holding its tokens is
//! complete and listed. Shards roll over at about `shard_tokens`; the manifest
//! is updated at the end of the first input after a roll-over (closing the
//! partly-filled shards) and at the very end. Re-running with the same
//! settings deletes shard files the manifest does not list, skips finished
//! inputs and goes on; at most the inputs since the last update are read again.

pub mod pipeline;
pub mod vocab;

pub use crate::data::documents::{OnBad, Split};

use self::pipeline::Item;
use crate::data::documents::{self, InputFile, InputStats, Piece, ReadOptions};
use crate::data::shards::{
    Dtype, FinishedInput, MANIFEST_FILE, MANIFEST_VERSION, Manifest, PrepareSettings, ShardEntry,
    ShardHeader, ShardWriter, TOKENIZER_FILE, fnv1a64,
};
use crate::error::{Error, Result};
use crate::tokenizer::{Tokenizer, TokenizerSpec};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
    /// Draw progress bars on stderr (they stay hidden when it is not a terminal).
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

    fn settings(&self) -> PrepareSettings {
        PrepareSettings {
            tokenizer: self.tokenizer.to_string(),
            char_vocab_max: self.char_vocab_max,
            val_fraction: self.val_fraction,
            seed: self.seed,
            text_field: self.text_field.clone(),
        }
    }

    fn read_options(&self) -> ReadOptions {
        ReadOptions {
            text_field: self.text_field.clone(),
            on_bad_utf8: self.on_bad_utf8,
            on_bad_archive: self.on_bad_archive,
            val_fraction: self.val_fraction,
            seed: self.seed,
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
    pub train_tokens: u64,
    pub val_tokens: u64,
    pub bytes_read: u64,
    pub skipped_bad_utf8: u64,
    /// `name: reason` for each corrupt archive (or over-long record) skipped.
    pub bad_archives: Vec<String>,
    pub vocab_size: usize,
    pub seconds: f64,
}

/// Run `lmforge prepare`.
pub fn prepare(opts: &PrepareOptions) -> Result<PrepareReport> {
    let start = Instant::now();
    if !(0.0..1.0).contains(&opts.val_fraction) {
        return Err(Error::Config(format!(
            "--val-fraction {} must be in [0, 1)",
            opts.val_fraction
        )));
    }
    if opts.inputs.is_empty() {
        return Err(Error::Config("no inputs given".into()));
    }
    let all_inputs = documents::expand_inputs(&opts.inputs, Some(&opts.out))?;
    if all_inputs.is_empty() {
        return Err(Error::Config(format!(
            "no input files found in {}",
            opts.inputs.join(" ")
        )));
    }
    let out = &opts.out;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let manifest_path = out.join(MANIFEST_FILE);
    let tokenizer_path = out.join(TOKENIZER_FILE);

    let (mut manifest, tokenizer) = if manifest_path.exists() {
        let manifest = Manifest::load(&manifest_path)?;
        check_same_settings(&manifest_path, &manifest.settings, &opts.settings())?;
        let bytes = std::fs::read(&tokenizer_path).map_err(|e| Error::io(&tokenizer_path, e))?;
        if fnv1a64(&bytes) != manifest.tokenizer_id {
            return Err(Error::format(
                &tokenizer_path,
                "does not match manifest.json's tokenizer id; prepare into a new --out directory",
            ));
        }
        (manifest, crate::tokenizer::load(&tokenizer_path)?)
    } else {
        check_fresh_dir(out)?;
        let tokenizer = tokenizer_for(opts, &all_inputs)?;
        let bytes = std::fs::read(&tokenizer_path).map_err(|e| Error::io(&tokenizer_path, e))?;
        let manifest = Manifest {
            format: Manifest::FORMAT.into(),
            version: MANIFEST_VERSION,
            tokenizer_kind: tokenizer.kind().into(),
            tokenizer_id: fnv1a64(&bytes),
            vocab_size: tokenizer.vocab_size(),
            eot_token: tokenizer.eot_token(),
            dtype: Dtype::for_vocab(tokenizer.vocab_size()),
            settings: opts.settings(),
            train: Vec::new(),
            val: Vec::new(),
            finished_inputs: Vec::new(),
        };
        manifest.save(&manifest_path)?;
        (manifest, tokenizer)
    };
    remove_unlisted_shards(out, &manifest)?;

    let is_finished = |input: &InputFile| {
        let path = input.path.to_string_lossy();
        manifest
            .finished_inputs
            .iter()
            .any(|f| f.path == path && f.bytes == input.bytes)
    };
    let todo: Vec<InputFile> = all_inputs
        .iter()
        .filter(|i| !is_finished(i))
        .cloned()
        .collect();
    let mut report = PrepareReport {
        inputs_skipped: all_inputs.len() - todo.len(),
        vocab_size: tokenizer.vocab_size(),
        ..Default::default()
    };

    let total_bytes = todo.iter().map(|i| i.bytes).sum();
    let bar = progress_bar(opts.progress, total_bytes, "tokenizing");
    let bytes_read = AtomicU64::new(0);
    let mut writer = SplitWriters::new(out, &manifest, opts.shard_tokens);
    let tokenizer = tokenizer.as_ref();
    let dtype = manifest.dtype;
    let work = |pieces: Vec<Piece>| tokenize_batch(tokenizer, dtype, pieces);
    let mut pending: Vec<FinishedInput> = Vec::new();
    // What workers found in the current input's compressed members.
    let mut member_stats = InputStats::default();
    let mut sink = |item: Item<TokenBatch>| -> Result<()> {
        match item {
            Item::Batches { results, stats } => {
                for batch in &results {
                    report.documents += batch.documents;
                    writer.write(batch)?;
                }
                member_stats.add(stats);
            }
            Item::InputDone { index, mut stats } => {
                stats.add(std::mem::take(&mut member_stats));
                let input = &todo[index];
                report.inputs_read += 1;
                report.skipped_bad_utf8 += stats.skipped_bad_utf8;
                report
                    .bad_archives
                    .extend(stats.bad_archives.iter().cloned());
                pending.push(FinishedInput {
                    path: input.path.to_string_lossy().into_owned(),
                    bytes: input.bytes,
                    documents: stats.documents,
                    skipped_bad_utf8: stats.skipped_bad_utf8,
                    bad_archive: (!stats.bad_archives.is_empty())
                        .then(|| stats.bad_archives.join("; ")),
                });
                if writer.rolled || index + 1 == todo.len() {
                    writer.commit(&mut manifest, &mut pending)?;
                    manifest.save(&manifest_path)?;
                }
            }
        }
        let (train, val) = (writer.train.total, writer.val.total);
        bar.set_position(bytes_read.load(Ordering::Relaxed));
        bar.set_message(format!("{} docs, {} tokens", report.documents, train + val));
        Ok(())
    };
    pipeline::run(
        &todo,
        &opts.read_options(),
        opts.threads,
        &bytes_read,
        &work,
        &mut sink,
    )?;
    bar.finish_and_clear();
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
    Ok(report)
}

/// The one place a `--tokenizer` argument becomes a tokenizer, saved as
/// `OUT/tokenizer.json`.
fn tokenizer_for(opts: &PrepareOptions, inputs: &[InputFile]) -> Result<Box<dyn Tokenizer>> {
    let path = opts.out.join(TOKENIZER_FILE);
    if opts.char_vocab_max.is_some() && opts.tokenizer != TokenizerSpec::Char {
        return Err(Error::Config(
            "--char-vocab-max only applies to --tokenizer char".into(),
        ));
    }
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

/// A new output directory may only hold what an interrupted first run leaves.
fn check_fresh_dir(out: &Path) -> Result<()> {
    for entry in std::fs::read_dir(out).map_err(|e| Error::io(out, e))? {
        let name = entry.map_err(|e| Error::io(out, e))?.file_name();
        let name = name.to_string_lossy();
        if name != TOKENIZER_FILE && !name.contains(".tmp") {
            return Err(Error::format(
                out,
                format!(
                    "--out directory holds {name:?} but no manifest.json: not a prepare \
                     directory; use a new or empty directory"
                ),
            ));
        }
    }
    Ok(())
}

fn check_same_settings(path: &Path, old: &PrepareSettings, new: &PrepareSettings) -> Result<()> {
    if old == new {
        return Ok(());
    }
    Err(Error::format(
        path,
        format!(
            "this directory was prepared with other settings ({old:?}); resume with the same \
             --tokenizer, --val-fraction, --seed, --text-field and --char-vocab-max, or use a \
             new --out ({new:?})"
        ),
    ))
}

/// Delete shard files (and temporary files) an interrupted run left unlisted.
fn remove_unlisted_shards(out: &Path, manifest: &Manifest) -> Result<()> {
    let listed: std::collections::HashSet<&str> = manifest
        .train
        .iter()
        .chain(&manifest.val)
        .map(|s| s.file.as_str())
        .collect();
    for entry in std::fs::read_dir(out).map_err(|e| Error::io(out, e))? {
        let path = entry.map_err(|e| Error::io(out, e))?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let ours = (name.starts_with("train_") || name.starts_with("val_"))
            && (name.ends_with(".bin") || name.ends_with(".bin.tmp"));
        if ours && !listed.contains(name.as_ref()) {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// One batch's tokens, already in the shards' on-disk width.
pub struct TokenBatch {
    documents: u64,
    train: Vec<u8>,
    val: Vec<u8>,
}

fn tokenize_batch(
    tokenizer: &dyn Tokenizer,
    dtype: Dtype,
    pieces: Vec<Piece>,
) -> Result<TokenBatch> {
    let mut batch = TokenBatch {
        documents: 0,
        train: Vec::new(),
        val: Vec::new(),
    };
    let eot = tokenizer.eot_token();
    for piece in pieces {
        let mut ids = Vec::with_capacity(piece.text.len() + 1);
        if piece.first {
            batch.documents += 1;
            ids.extend(eot);
        }
        let tokens = tokenizer
            .encode(&piece.text)
            .map_err(|e| Error::Data(format!("{}: {e}", piece.source)))?;
        ids.extend(tokens);
        let out = match piece.split {
            Split::Train => &mut batch.train,
            Split::Val => &mut batch.val,
        };
        dtype.extend_le(out, &ids);
    }
    Ok(batch)
}

/// The open shard of one split and the shards it has closed since the last commit.
struct SplitWriter {
    prefix: &'static str,
    next_index: usize,
    open: Option<ShardWriter>,
    closed: Vec<ShardEntry>,
    /// Tokens written in this run.
    total: u64,
}

impl SplitWriter {
    fn file_name(&self) -> String {
        format!("{}_{:06}.bin", self.prefix, self.next_index)
    }

    fn close(&mut self, dir: &Path) -> Result<()> {
        if let Some(w) = self.open.take() {
            let file = self.file_name();
            self.next_index += 1;
            let tokens = w.finish()?;
            debug_assert!(dir.join(&file).exists());
            self.closed.push(ShardEntry { file, tokens });
        }
        Ok(())
    }
}

/// Writes the train and val shards.
struct SplitWriters {
    dir: PathBuf,
    header: ShardHeader,
    shard_tokens: u64,
    train: SplitWriter,
    val: SplitWriter,
    /// A shard was filled since the last commit.
    rolled: bool,
}

impl SplitWriters {
    fn new(dir: &Path, manifest: &Manifest, shard_tokens: u64) -> Self {
        let split = |prefix, listed: &[ShardEntry]| SplitWriter {
            prefix,
            next_index: listed.len(),
            open: None,
            closed: Vec::new(),
            total: 0,
        };
        SplitWriters {
            dir: dir.to_path_buf(),
            header: ShardHeader {
                dtype: manifest.dtype,
                tokens: 0,
                vocab_size: manifest.vocab_size as u32,
                tokenizer_id: manifest.tokenizer_id,
                tokenizer_kind: manifest.tokenizer_kind.clone(),
            },
            shard_tokens: shard_tokens.max(1),
            train: split("train", &manifest.train),
            val: split("val", &manifest.val),
            rolled: false,
        }
    }

    fn write(&mut self, batch: &TokenBatch) -> Result<()> {
        let width = self.header.dtype.bytes() as u64;
        for (split, bytes) in [(&mut self.train, &batch.train), (&mut self.val, &batch.val)] {
            if bytes.is_empty() {
                continue;
            }
            if split.open.is_none() {
                let path = self.dir.join(split.file_name());
                split.open = Some(ShardWriter::create(&path, self.header.clone())?);
            }
            let shard = split.open.as_mut().expect("just opened");
            let count = bytes.len() as u64 / width;
            shard.write_encoded(bytes, count)?;
            split.total += count;
            if shard.tokens() >= self.shard_tokens {
                split.close(&self.dir)?;
                self.rolled = true;
            }
        }
        Ok(())
    }

    /// Close the open shards and move them and the finished inputs into the manifest.
    fn commit(&mut self, manifest: &mut Manifest, finished: &mut Vec<FinishedInput>) -> Result<()> {
        self.train.close(&self.dir)?;
        self.val.close(&self.dir)?;
        manifest.train.append(&mut self.train.closed);
        manifest.val.append(&mut self.val.closed);
        manifest.finished_inputs.append(finished);
        self.rolled = false;
        Ok(())
    }
}

/// A progress bar on stderr showing bytes/s and ETA; hidden unless `show`
/// (indicatif also hides it when stderr is not a terminal).
fn progress_bar(show: bool, total_bytes: u64, what: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total_bytes);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(500));
    bar
}
