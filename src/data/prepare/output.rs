//! Prepare's output side: token batches made by the workers, the open shard
//! of each split, and the [`Sink`] that writes batches in order and commits
//! finished inputs to the manifest (see the resume rules in [`super`]).

use super::PrepareReport;
use super::pipeline::Item;
use crate::data::documents::{InputFile, InputStats, Piece, Split};
use crate::data::shards::{
    Dtype, FinishedInput, MANIFEST_FILE, Manifest, ShardEntry, ShardHeader, ShardWriter,
};
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};

/// One batch's tokens, already in the shards' on-disk width.
pub struct TokenBatch {
    documents: u64,
    train: Vec<u8>,
    val: Vec<u8>,
}

/// Tokenize a batch of pieces (in a worker): the end-of-text token before each
/// document's first piece and before its validation tail, then its ids, in
/// the split it was assigned.
pub fn tokenize_batch(
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
        }
        if piece.first || piece.starts_tail {
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
    fn new(prefix: &'static str, listed: &[ShardEntry]) -> Self {
        SplitWriter {
            prefix,
            next_index: listed.len(),
            open: None,
            closed: Vec::new(),
            total: 0,
        }
    }

    fn file_name(&self) -> String {
        format!("{}_{:06}.bin", self.prefix, self.next_index)
    }

    /// Append tokens (`width` bytes each), opening a shard if none is open;
    /// true if that filled the shard to `shard_tokens` and closed it.
    fn write(
        &mut self,
        dir: &Path,
        header: &ShardHeader,
        bytes: &[u8],
        shard_tokens: u64,
    ) -> Result<bool> {
        let shard = match &mut self.open {
            Some(shard) => shard,
            None => {
                let path = dir.join(self.file_name());
                self.open
                    .insert(ShardWriter::create(&path, header.clone())?)
            }
        };
        let count = bytes.len() as u64 / header.dtype.bytes() as u64;
        shard.write_encoded(bytes, count)?;
        self.total += count;
        let full = shard.tokens() >= shard_tokens;
        if full {
            self.close()?;
        }
        Ok(full)
    }

    fn close(&mut self) -> Result<()> {
        if let Some(w) = self.open.take() {
            let file = self.file_name();
            self.next_index += 1;
            let tokens = w.finish()?;
            self.closed.push(ShardEntry { file, tokens });
        }
        Ok(())
    }
}

/// Receives the pipeline's items in order: writes token batches to the train
/// and val shards, and records finished inputs in the manifest.
pub struct Sink<'a> {
    dir: PathBuf,
    manifest: &'a mut Manifest,
    inputs: &'a [InputFile],
    header: ShardHeader,
    shard_tokens: u64,
    train: SplitWriter,
    val: SplitWriter,
    /// A shard was filled since the last commit.
    rolled: bool,
    /// Inputs read whose shards are not all closed and listed yet.
    pending: Vec<FinishedInput>,
    /// What workers found in the current input's compressed members.
    member_stats: InputStats,
}

impl<'a> Sink<'a> {
    /// Write into `dir`, numbering shards after those `manifest` lists; the
    /// pipeline's input indices refer to `inputs`.
    pub fn new(
        dir: &Path,
        manifest: &'a mut Manifest,
        inputs: &'a [InputFile],
        shard_tokens: u64,
    ) -> Self {
        let header = ShardHeader {
            dtype: manifest.dtype,
            tokens: 0,
            vocab_size: manifest.vocab_size as u32,
            tokenizer_id: manifest.tokenizer_id,
            tokenizer_kind: manifest.tokenizer_kind.clone(),
        };
        Sink {
            dir: dir.to_path_buf(),
            train: SplitWriter::new("train", &manifest.train),
            val: SplitWriter::new("val", &manifest.val),
            manifest,
            inputs,
            header,
            shard_tokens: shard_tokens.max(1),
            rolled: false,
            pending: Vec::new(),
            member_stats: InputStats::default(),
        }
    }

    /// Tokens written in this run.
    pub fn tokens_written(&self) -> u64 {
        self.train.total + self.val.total
    }

    pub fn receive(&mut self, item: Item<TokenBatch>, report: &mut PrepareReport) -> Result<()> {
        match item {
            Item::Batches { results, stats } => {
                for batch in &results {
                    report.documents += batch.documents;
                    self.write(batch)?;
                }
                report.tail_split += stats.tail_split;
                self.member_stats.add(stats);
            }
            Item::InputDone { index, mut stats } => {
                report.tail_split += stats.tail_split;
                stats.add(std::mem::take(&mut self.member_stats));
                report.inputs_read += 1;
                report.skipped_bad_utf8 += stats.skipped_bad_utf8;
                report
                    .bad_archives
                    .extend(stats.bad_archives.iter().cloned());
                let input = &self.inputs[index];
                self.pending.push(FinishedInput {
                    path: input.path.to_string_lossy().into_owned(),
                    bytes: input.bytes,
                    modified_ns: input.modified_ns,
                    documents: stats.documents,
                    skipped_bad_utf8: stats.skipped_bad_utf8,
                    bad_archive: (!stats.bad_archives.is_empty())
                        .then(|| stats.bad_archives.join("; ")),
                });
                if self.rolled || index + 1 == self.inputs.len() {
                    self.commit()?;
                }
            }
        }
        Ok(())
    }

    fn write(&mut self, batch: &TokenBatch) -> Result<()> {
        for (split, bytes) in [(&mut self.train, &batch.train), (&mut self.val, &batch.val)] {
            if !bytes.is_empty()
                && split.write(&self.dir, &self.header, bytes, self.shard_tokens)?
            {
                self.rolled = true;
            }
        }
        Ok(())
    }

    /// Close the open shards, move them and the finished inputs into the
    /// manifest, and save it.
    fn commit(&mut self) -> Result<()> {
        self.train.close()?;
        self.val.close()?;
        self.manifest.train.append(&mut self.train.closed);
        self.manifest.val.append(&mut self.val.closed);
        self.manifest.finished_inputs.append(&mut self.pending);
        self.rolled = false;
        self.manifest.save(&self.dir.join(MANIFEST_FILE))
    }
}
