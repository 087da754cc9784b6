//! Reading shards: each one memory-mapped (`MappedShard`), a split's shards
//! read as one token sequence ([`ShardedTokens`]), and a whole directory of
//! any [`Layout`] opened as a [`ShardSet`].

use super::foreign;
use super::header::{Dtype, HEADER_BYTES, ShardHeader};
use super::layout::Layout;
use super::manifest::{MANIFEST_FILE, Manifest, ShardEntry, TOKENIZER_FILE};
use crate::data::TokenSource;
use crate::error::{Error, Result};
use std::fs::File;
use std::path::{Path, PathBuf};

/// One memory-mapped shard: `len` tokens of `dtype` starting `offset` bytes in.
pub(super) struct MappedShard {
    map: memmap2::Mmap,
    offset: usize,
    dtype: Dtype,
    len: usize,
}

impl MappedShard {
    /// Map `path` and check that it holds `offset + len * dtype` bytes at least.
    pub(super) fn open(path: &Path, offset: usize, dtype: Dtype, len: usize) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only and lives as long as the ShardSet. Another
        // process truncating the file while it is mapped would make reads fault
        // (SIGBUS); prepared directories are written once and then only read.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let need = offset as u64 + len as u64 * dtype.bytes() as u64;
        if (map.len() as u64) < need {
            return Err(Error::format(
                path,
                format!(
                    "truncated shard: the header promises {len} tokens ({need} bytes) but the file has {} bytes",
                    map.len()
                ),
            ));
        }
        // Training reads short windows at random offsets: without this hint the
        // kernel reads ahead ~128 KiB around every window, and resident memory
        // grows with the shard size for nothing. (Advice only; failure is harmless.)
        #[cfg(unix)]
        let _ = map.advise(memmap2::Advice::Random);
        Ok(MappedShard {
            map,
            offset,
            dtype,
            len,
        })
    }

    fn read(&self, start: usize, out: &mut [u32]) {
        let w = self.dtype.bytes();
        let bytes = &self.map[self.offset + start * w..self.offset + (start + out.len()) * w];
        match self.dtype {
            Dtype::U16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = u16::from_le_bytes([b[0], b[1]]) as u32;
                }
            }
            Dtype::U32 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
        }
    }
}

/// Read up to `buf.len()` bytes from the start of `path`; returns how many.
pub(super) fn read_prefix(path: &Path, buf: &mut [u8]) -> Result<usize> {
    use std::io::Read;
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut n = 0;
    let mut take = file.take(buf.len() as u64);
    while n < buf.len() {
        match take.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    Ok(n)
}

/// One split: its shards read as a single token sequence (windows may cross
/// from one shard into the next).
pub struct ShardedTokens {
    shards: Vec<MappedShard>,
    /// `starts[i]` is the position of shard `i`'s first token in the sequence.
    starts: Vec<usize>,
    len: usize,
}

impl ShardedTokens {
    pub(super) fn new(shards: Vec<MappedShard>) -> Self {
        let shards: Vec<MappedShard> = shards.into_iter().filter(|s| s.len > 0).collect();
        let mut starts = Vec::with_capacity(shards.len());
        let mut len = 0;
        for s in &shards {
            starts.push(len);
            len += s.len;
        }
        ShardedTokens {
            shards,
            starts,
            len,
        }
    }

    /// Number of (non-empty) shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }
}

impl TokenSource for ShardedTokens {
    fn len(&self) -> usize {
        self.len
    }

    fn read(&self, start: usize, out: &mut [u32]) {
        assert!(
            start + out.len() <= self.len,
            "read of tokens {start}..{} past the end ({})",
            start + out.len(),
            self.len
        );
        let mut pos = start;
        let mut done = 0;
        // The shard holding `pos`: the last one starting at or before it.
        let mut i = self.starts.partition_point(|&s| s <= pos).saturating_sub(1);
        while done < out.len() {
            let shard = &self.shards[i];
            let within = pos - self.starts[i];
            let n = (shard.len - within).min(out.len() - done);
            shard.read(within, &mut out[done..done + n]);
            done += n;
            pos += n;
            i += 1;
        }
    }
}

/// The shards of a directory, by split, before they become a [`ShardSet`].
pub(super) struct Splits {
    pub train: Vec<MappedShard>,
    pub val: Vec<MappedShard>,
}

/// A prepared directory, memory-mapped: `ShardSet::open(dir)?.train()` is a
/// [`TokenSource`] to sample training windows from.
pub struct ShardSet {
    layout: Layout,
    train: ShardedTokens,
    val: ShardedTokens,
    vocab_size: Option<usize>,
    eot_token: Option<u32>,
    tokenizer_path: Option<PathBuf>,
    /// `(inputs done, inputs)` when `prepare` had not finished the directory.
    unfinished: Option<(usize, usize)>,
}

impl ShardSet {
    /// Open a directory written by `lmforge prepare`, or nanoGPT's
    /// `train.bin`/`val.bin`, or llm.c's `*_train_*.bin`/`*_val_*.bin`
    /// (told apart by [`Layout::detect`]).
    pub fn open(dir: &Path) -> Result<ShardSet> {
        let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
        if !meta.is_dir() {
            return Err(Error::format(
                dir,
                "not a directory of shards (expected the --out directory of `lmforge prepare`)",
            ));
        }
        let Some(layout) = Layout::detect(dir)? else {
            return Err(Error::format(
                dir,
                "no shards found: expected manifest.json (lmforge prepare), train.bin/val.bin \
                 (nanoGPT) or *_train_*.bin/*_val_*.bin (llm.c)",
            ));
        };
        let splits = match layout {
            Layout::Lmforge => {
                return Self::open_lmforge(dir, &Manifest::load(&dir.join(MANIFEST_FILE))?);
            }
            Layout::NanoGpt => foreign::open_nanogpt(dir)?,
            Layout::LlmC => foreign::open_llmc(dir)?,
        };
        // Neither foreign layout records a vocabulary; a tokenizer.json put
        // beside the shards is used when there is one.
        Ok(ShardSet {
            layout,
            train: ShardedTokens::new(splits.train),
            val: ShardedTokens::new(splits.val),
            vocab_size: None,
            eot_token: None,
            tokenizer_path: Some(dir.join(TOKENIZER_FILE)).filter(|p| p.exists()),
            unfinished: None,
        })
    }

    fn open_lmforge(dir: &Path, manifest: &Manifest) -> Result<ShardSet> {
        let open_all = |entries: &[ShardEntry]| -> Result<Vec<MappedShard>> {
            entries
                .iter()
                .map(|entry| open_listed_shard(&dir.join(&entry.file), entry, manifest))
                .collect()
        };
        Ok(ShardSet {
            layout: Layout::Lmforge,
            train: ShardedTokens::new(open_all(&manifest.train)?),
            val: ShardedTokens::new(open_all(&manifest.val)?),
            vocab_size: Some(manifest.vocab_size),
            eot_token: manifest.eot_token,
            tokenizer_path: Some(dir.join(TOKENIZER_FILE)),
            unfinished: manifest.unfinished(),
        })
    }

    /// The training split.
    pub fn train(&self) -> &ShardedTokens {
        &self.train
    }

    /// The validation split (may be empty).
    pub fn val(&self) -> &ShardedTokens {
        &self.val
    }

    /// Size of the vocabulary the shards were made with; `None` for nanoGPT and
    /// llm.c layouts, which do not record it.
    pub fn vocab_size(&self) -> Option<usize> {
        self.vocab_size
    }

    /// The end-of-text token placed before each document, if known.
    pub fn eot_token(&self) -> Option<u32> {
        self.eot_token
    }

    /// `DIR/tokenizer.json`, when the directory has one.
    pub fn tokenizer_path(&self) -> Option<&Path> {
        self.tokenizer_path.as_deref()
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// `(inputs done, inputs)` of a directory `lmforge prepare` did not
    /// finish (it was interrupted, or is still running); `None` otherwise.
    pub fn unfinished(&self) -> Option<(usize, usize)> {
        self.unfinished
    }
}

/// Map an lmforge shard after checking its header.
fn open_lmforge_shard(path: &Path) -> Result<(MappedShard, ShardHeader)> {
    let mut head = [0u8; HEADER_BYTES];
    let n = read_prefix(path, &mut head)?;
    let header = ShardHeader::parse(path, &head[..n])?;
    let shard = MappedShard::open(path, HEADER_BYTES, header.dtype, header.tokens as usize)?;
    Ok((shard, header))
}

/// Map a shard the manifest lists, checking that it is the one listed.
fn open_listed_shard(path: &Path, entry: &ShardEntry, manifest: &Manifest) -> Result<MappedShard> {
    let (shard, header) = open_lmforge_shard(path)?;
    if header.tokens != entry.tokens {
        return Err(Error::format(
            path,
            format!(
                "holds {} tokens but manifest.json lists {}",
                header.tokens, entry.tokens
            ),
        ));
    }
    if header.tokenizer_id != manifest.tokenizer_id || header.dtype != manifest.dtype {
        return Err(Error::format(
            path,
            "made with a different tokenizer or token width than manifest.json says",
        ));
    }
    Ok(shard)
}

#[cfg(test)]
mod tests {
    use super::super::writer::ShardWriter;
    use super::*;

    fn write_shard(path: &Path, dtype: Dtype, tokens: &[u32]) {
        let header = ShardHeader {
            dtype,
            tokens: 0,
            vocab_size: 70_000,
            tokenizer_id: 42,
            tokenizer_kind: "char".into(),
        };
        let mut w = ShardWriter::create(path, header).unwrap();
        let mut bytes = Vec::new();
        dtype.extend_le(&mut bytes, tokens);
        w.write_encoded(&bytes, tokens.len() as u64).unwrap();
        assert_eq!(w.finish().unwrap(), tokens.len() as u64);
    }

    #[test]
    fn reads_cross_shard_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.bin"), dir.path().join("b.bin"));
        write_shard(&a, Dtype::U32, &[1, 2, 3]);
        write_shard(&b, Dtype::U32, &[70_000, 5]);
        let tokens = ShardedTokens::new(vec![
            open_lmforge_shard(&a).unwrap().0,
            open_lmforge_shard(&b).unwrap().0,
        ]);
        assert_eq!(tokens.len(), 5);
        let mut out = [0u32; 4];
        tokens.read(1, &mut out);
        assert_eq!(out, [2, 3, 70_000, 5]);
        let mut one = [0u32; 1];
        tokens.read(4, &mut one);
        assert_eq!(one, [5]);
    }
}
