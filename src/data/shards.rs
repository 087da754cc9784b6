//! Token shards: the files `lmforge prepare` writes and `lmforge train --data DIR`
//! memory-maps.
//!
//! # The lmforge layout
//!
//! A prepared directory holds:
//!
//! - `manifest.json` ([`Manifest`]): format version, tokenizer kind, vocabulary
//!   size, end-of-text token id, the shards of each split with their token
//!   counts, and the inputs already finished (so an interrupted `prepare` resumes).
//! - `tokenizer.json`: the tokenizer the shards were made with.
//! - `train_000000.bin`, `val_000000.bin`, ...: token shards. Only the shards the
//!   manifest lists belong to the data set; a shard is listed only once complete.
//!
//! A shard is a [`HEADER_BYTES`]-byte header followed by the tokens, little-endian,
//! `u16` when the vocabulary has at most 65,536 ids, else `u32`:
//!
//! | offset | bytes | field                                                   |
//! |-------:|------:|---------------------------------------------------------|
//! | 0      | 8     | magic `LMFSHARD`                                        |
//! | 8      | 4     | format version, u32 (1)                                 |
//! | 12     | 4     | bytes per token, u32: 2 (u16) or 4 (u32)                |
//! | 16     | 8     | token count, u64                                        |
//! | 24     | 4     | vocabulary size, u32                                    |
//! | 28     | 4     | reserved, zero                                          |
//! | 32     | 8     | tokenizer id: FNV-1a 64 of `tokenizer.json`'s bytes     |
//! | 40     | 24    | tokenizer kind (e.g. `char`), UTF-8, zero-padded        |
//!
//! With numpy: `np.memmap(path, dtype=np.uint16, mode="r", offset=64)` (use
//! `np.uint32` when the header's bytes-per-token is 4).
//!
//! # Other layouts [`ShardSet::open`] accepts
//!
//! - nanoGPT: `train.bin` and `val.bin`, raw `u16` tokens with no header;
//!   `np.memmap(path, dtype=np.uint16, mode="r")`.
//! - llm.c: `*_train_*.bin` and `*_val_*.bin` (sorted by name), each a header of
//!   256 little-endian `i32` (magic 20240520, version 1, token count at index 2)
//!   then `u16` tokens; `np.memmap(path, dtype=np.uint16, mode="r", offset=1024)`.
//!
//! Neither records a vocabulary, so [`ShardSet::vocab_size`] is `None` for them.
//!
//! # Reading
//!
//! Each split is the concatenation of its shards, in manifest (or name) order, as
//! one [`TokenSource`]: a training window may cross from one shard into the next,
//! exactly as it would cross a document boundary inside one shard (documents are
//! separated by the end-of-text token anyway). Shards are memory-mapped, so the
//! operating system pages in only the windows that are read.

use super::TokenSource;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Bytes before the first token of an lmforge shard.
pub const HEADER_BYTES: usize = 64;
/// First 8 bytes of an lmforge shard.
pub const MAGIC: [u8; 8] = *b"LMFSHARD";
/// Version of the shard header written by this code.
pub const VERSION: u32 = 1;
/// Version of `manifest.json` written by this code.
pub const MANIFEST_VERSION: u32 = 1;
/// The manifest's file name inside a prepared directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The tokenizer's file name inside a prepared directory.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// llm.c's shard header: 256 `i32`, magic first, version second, count third.
const LLMC_HEADER_BYTES: usize = 256 * 4;
const LLMC_MAGIC: i32 = 20240520;
const LLMC_VERSION_U16: i32 = 1;

/// Width of a token on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    U16,
    U32,
}

impl Dtype {
    /// The narrowest width that holds every id of a `vocab_size`-token vocabulary.
    pub fn for_vocab(vocab_size: usize) -> Dtype {
        if vocab_size <= 1 << 16 {
            Dtype::U16
        } else {
            Dtype::U32
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            Dtype::U16 => 2,
            Dtype::U32 => 4,
        }
    }

    /// Append `tokens` to `out` in this width, little-endian. The caller
    /// guarantees that every id fits (ids come from a tokenizer of known size).
    pub fn extend_le(self, out: &mut Vec<u8>, tokens: &[u32]) {
        match self {
            Dtype::U16 => out.extend(tokens.iter().flat_map(|&t| (t as u16).to_le_bytes())),
            Dtype::U32 => out.extend(tokens.iter().flat_map(|&t| t.to_le_bytes())),
        }
    }
}

/// FNV-1a 64-bit hash: the tokenizer id stored in shard headers.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The fields of an lmforge shard header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardHeader {
    pub dtype: Dtype,
    pub tokens: u64,
    pub vocab_size: u32,
    pub tokenizer_id: u64,
    pub tokenizer_kind: String,
}

impl ShardHeader {
    pub fn to_bytes(&self) -> [u8; HEADER_BYTES] {
        let mut h = [0u8; HEADER_BYTES];
        h[0..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&(self.dtype.bytes() as u32).to_le_bytes());
        h[16..24].copy_from_slice(&self.tokens.to_le_bytes());
        h[24..28].copy_from_slice(&self.vocab_size.to_le_bytes());
        h[32..40].copy_from_slice(&self.tokenizer_id.to_le_bytes());
        let kind = self.tokenizer_kind.as_bytes();
        let n = kind.len().min(24);
        h[40..40 + n].copy_from_slice(&kind[..n]);
        h
    }

    /// Parse a header; errors name `path` and say what is wrong.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self> {
        if bytes.len() < HEADER_BYTES {
            return Err(Error::format(
                path,
                format!(
                    "truncated shard: {} bytes, shorter than the {HEADER_BYTES}-byte header",
                    bytes.len()
                ),
            ));
        }
        if bytes[0..8] != MAGIC {
            return Err(Error::format(
                path,
                "not an lmforge shard (bad magic; expected \"LMFSHARD\")",
            ));
        }
        let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap());
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap());
        let version = u32_at(8);
        if version != VERSION {
            return Err(Error::format(
                path,
                format!("shard format version {version}; this lmforge reads version {VERSION}"),
            ));
        }
        let dtype = match u32_at(12) {
            2 => Dtype::U16,
            4 => Dtype::U32,
            other => {
                return Err(Error::format(
                    path,
                    format!("bad bytes-per-token {other} in the shard header (expected 2 or 4)"),
                ));
            }
        };
        let kind = &bytes[40..64];
        let kind_len = kind.iter().position(|&b| b == 0).unwrap_or(kind.len());
        Ok(ShardHeader {
            dtype,
            tokens: u64_at(16),
            vocab_size: u32_at(24),
            tokenizer_id: u64_at(32),
            tokenizer_kind: String::from_utf8_lossy(&kind[..kind_len]).into_owned(),
        })
    }
}

/// Writes one shard under a temporary name; [`ShardWriter::finish`] fills in the
/// token count, flushes to disk and only then renames it to its final name, so a
/// file under a shard's name is always complete.
pub struct ShardWriter {
    path: PathBuf,
    tmp: PathBuf,
    file: BufWriter<File>,
    header: ShardHeader,
}

impl ShardWriter {
    /// Start a shard that will appear at `path`. `header.tokens` is ignored.
    pub fn create(path: &Path, header: ShardHeader) -> Result<Self> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut file = BufWriter::with_capacity(1 << 20, file);
        file.write_all(&header.to_bytes())
            .map_err(|e| Error::io(&tmp, e))?;
        Ok(ShardWriter {
            path: path.to_path_buf(),
            tmp,
            file,
            header: ShardHeader {
                tokens: 0,
                ..header
            },
        })
    }

    pub fn dtype(&self) -> Dtype {
        self.header.dtype
    }

    /// Tokens written so far.
    pub fn tokens(&self) -> u64 {
        self.header.tokens
    }

    /// Append `count` tokens already encoded in this shard's dtype (little-endian).
    pub fn write_encoded(&mut self, bytes: &[u8], count: u64) -> Result<()> {
        debug_assert_eq!(bytes.len() as u64, count * self.header.dtype.bytes() as u64);
        self.file
            .write_all(bytes)
            .map_err(|e| Error::io(&self.tmp, e))?;
        self.header.tokens += count;
        Ok(())
    }

    /// Write the final header, sync and rename into place. Returns the token count.
    pub fn finish(self) -> Result<u64> {
        let ShardWriter {
            path,
            tmp,
            file,
            header,
        } = self;
        let result = (|| {
            let mut file = file.into_inner().map_err(|e| e.into_error())?;
            file.seek(SeekFrom::Start(0))?;
            file.write_all(&header.to_bytes())?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(&path, e));
        }
        Ok(header.tokens)
    }
}

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
    /// Its size in bytes when it was read: a changed file is read again.
    pub bytes: u64,
    pub documents: u64,
    /// Documents skipped for invalid UTF-8 (`--on-bad-utf8 skip`).
    pub skipped_bad_utf8: u64,
    /// Why the rest of this input was skipped (`--on-bad-archive skip`), if it was.
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

    /// Write atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).expect("a manifest always serialises");
        crate::fsutil::write_atomic_bytes(path, &bytes)
    }
}

/// One memory-mapped shard: `len` tokens of `dtype` starting `offset` bytes in.
struct MappedShard {
    map: memmap2::Mmap,
    offset: usize,
    dtype: Dtype,
    len: usize,
}

impl MappedShard {
    /// Map `path` and check that it holds `offset + len * dtype` bytes at least.
    fn open(path: &Path, offset: usize, dtype: Dtype, len: usize) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only and lives as long as the ShardSet. Another
        // process truncating the file while it is mapped would make reads fault
        // (SIGBUS); prepared directories are written once and then only read.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        // Training reads short windows at random offsets: without this hint the
        // kernel reads ahead ~128 KiB around every window, and resident memory
        // grows with the shard size for nothing. (Advice only; failure is harmless.)
        #[cfg(unix)]
        let _ = map.advise(memmap2::Advice::Random);
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

/// One split: its shards read as a single token sequence (windows may cross
/// from one shard into the next).
pub struct ShardedTokens {
    shards: Vec<MappedShard>,
    /// `starts[i]` is the position of shard `i`'s first token in the sequence.
    starts: Vec<usize>,
    len: usize,
}

impl ShardedTokens {
    fn new(shards: Vec<MappedShard>) -> Self {
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

/// Which layout a directory was recognised as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Lmforge,
    NanoGpt,
    LlmC,
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
}

impl ShardSet {
    /// Open a directory written by `lmforge prepare`, or nanoGPT's
    /// `train.bin`/`val.bin`, or llm.c's `*_train_*.bin`/`*_val_*.bin`.
    pub fn open(dir: &Path) -> Result<ShardSet> {
        let meta = std::fs::metadata(dir).map_err(|e| Error::io(dir, e))?;
        if !meta.is_dir() {
            return Err(Error::format(
                dir,
                "not a directory of shards (expected the --out directory of `lmforge prepare`)",
            ));
        }
        let manifest = dir.join(MANIFEST_FILE);
        if manifest.exists() {
            return Self::open_lmforge(dir, &Manifest::load(&manifest)?);
        }
        let tokenizer = Some(dir.join(TOKENIZER_FILE)).filter(|p| p.exists());
        let (train, val) = (dir.join("train.bin"), dir.join("val.bin"));
        if train.exists() {
            let open_raw = |path: &Path| -> Result<Vec<MappedShard>> {
                if !path.exists() {
                    return Ok(Vec::new());
                }
                let size = std::fs::metadata(path)
                    .map_err(|e| Error::io(path, e))?
                    .len();
                if size % 2 != 0 {
                    return Err(Error::format(
                        path,
                        format!("{size} bytes is not a whole number of u16 tokens"),
                    ));
                }
                if size == 0 {
                    return Ok(Vec::new());
                }
                Ok(vec![MappedShard::open(
                    path,
                    0,
                    Dtype::U16,
                    size as usize / 2,
                )?])
            };
            return Ok(ShardSet {
                layout: Layout::NanoGpt,
                train: ShardedTokens::new(open_raw(&train)?),
                val: ShardedTokens::new(open_raw(&val)?),
                vocab_size: None,
                eot_token: None,
                tokenizer_path: tokenizer,
            });
        }
        let mut llmc_train = Vec::new();
        let mut llmc_val = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let path = entry.map_err(|e| Error::io(dir, e))?.path();
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if !name.ends_with(".bin") {
                continue;
            }
            if name.contains("_train_") {
                llmc_train.push(path);
            } else if name.contains("_val_") {
                llmc_val.push(path);
            }
        }
        if llmc_train.is_empty() && llmc_val.is_empty() {
            return Err(Error::format(
                dir,
                "no shards found: expected manifest.json (lmforge prepare), train.bin/val.bin \
                 (nanoGPT) or *_train_*.bin/*_val_*.bin (llm.c)",
            ));
        }
        llmc_train.sort();
        llmc_val.sort();
        let open_all = |paths: &[PathBuf]| -> Result<Vec<MappedShard>> {
            paths.iter().map(|p| open_llmc(p)).collect()
        };
        Ok(ShardSet {
            layout: Layout::LlmC,
            train: ShardedTokens::new(open_all(&llmc_train)?),
            val: ShardedTokens::new(open_all(&llmc_val)?),
            vocab_size: None,
            eot_token: None,
            tokenizer_path: tokenizer,
        })
    }

    fn open_lmforge(dir: &Path, manifest: &Manifest) -> Result<ShardSet> {
        let open_all = |entries: &[ShardEntry]| -> Result<Vec<MappedShard>> {
            entries
                .iter()
                .map(|entry| {
                    let path = dir.join(&entry.file);
                    let shard = open_lmforge_shard(&path)?;
                    let header = ShardHeader::parse(&path, &shard.map[..HEADER_BYTES])?;
                    if header.tokens != entry.tokens {
                        return Err(Error::format(
                            &path,
                            format!(
                                "holds {} tokens but manifest.json lists {}",
                                header.tokens, entry.tokens
                            ),
                        ));
                    }
                    if header.tokenizer_id != manifest.tokenizer_id
                        || header.dtype != manifest.dtype
                    {
                        return Err(Error::format(
                            &path,
                            "made with a different tokenizer or token width than manifest.json says",
                        ));
                    }
                    Ok(shard)
                })
                .collect()
        };
        Ok(ShardSet {
            layout: Layout::Lmforge,
            train: ShardedTokens::new(open_all(&manifest.train)?),
            val: ShardedTokens::new(open_all(&manifest.val)?),
            vocab_size: Some(manifest.vocab_size),
            eot_token: manifest.eot_token,
            tokenizer_path: Some(dir.join(TOKENIZER_FILE)),
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
}

/// Map an lmforge shard after checking its header.
fn open_lmforge_shard(path: &Path) -> Result<MappedShard> {
    let mut head = [0u8; HEADER_BYTES];
    let n = read_prefix(path, &mut head)?;
    let header = ShardHeader::parse(path, &head[..n])?;
    MappedShard::open(path, HEADER_BYTES, header.dtype, header.tokens as usize)
}

/// Map an llm.c shard after checking its header.
fn open_llmc(path: &Path) -> Result<MappedShard> {
    let mut head = [0u8; LLMC_HEADER_BYTES];
    let n = read_prefix(path, &mut head)?;
    if n < LLMC_HEADER_BYTES {
        return Err(Error::format(
            path,
            format!("truncated llm.c shard: {n} bytes, shorter than the 1024-byte header"),
        ));
    }
    let int = |i: usize| i32::from_le_bytes(head[i * 4..i * 4 + 4].try_into().unwrap());
    if int(0) != LLMC_MAGIC {
        return Err(Error::format(
            path,
            format!(
                "not an llm.c shard (bad magic {}, expected {LLMC_MAGIC})",
                int(0)
            ),
        ));
    }
    if int(1) != LLMC_VERSION_U16 {
        return Err(Error::format(
            path,
            format!(
                "llm.c shard version {}; only version {LLMC_VERSION_U16} (u16 tokens) is read",
                int(1)
            ),
        ));
    }
    let count = usize::try_from(int(2))
        .map_err(|_| Error::format(path, format!("negative token count {}", int(2))))?;
    MappedShard::open(path, LLMC_HEADER_BYTES, Dtype::U16, count)
}

/// Read up to `buf.len()` bytes from the start of `path`; returns how many.
fn read_prefix(path: &Path, buf: &mut [u8]) -> Result<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn header(dtype: Dtype) -> ShardHeader {
        ShardHeader {
            dtype,
            tokens: 0,
            vocab_size: 70_000,
            tokenizer_id: 42,
            tokenizer_kind: "char".into(),
        }
    }

    fn write_shard(path: &Path, dtype: Dtype, tokens: &[u32]) {
        let mut w = ShardWriter::create(path, header(dtype)).unwrap();
        let mut bytes = Vec::new();
        dtype.extend_le(&mut bytes, tokens);
        w.write_encoded(&bytes, tokens.len() as u64).unwrap();
        assert_eq!(w.finish().unwrap(), tokens.len() as u64);
    }

    #[test]
    fn header_round_trips_and_is_64_bytes() {
        let h = ShardHeader {
            tokens: 123_456_789_012,
            ..header(Dtype::U32)
        };
        let bytes = h.to_bytes();
        assert_eq!(&bytes[..8], b"LMFSHARD");
        assert_eq!(ShardHeader::parse(Path::new("x"), &bytes).unwrap(), h);
    }

    #[test]
    fn dtype_is_u16_up_to_65536_ids() {
        assert_eq!(Dtype::for_vocab(65_536), Dtype::U16);
        assert_eq!(Dtype::for_vocab(65_537), Dtype::U32);
    }

    #[test]
    fn writer_only_shows_the_final_name_when_finished() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train_000000.bin");
        let mut w = ShardWriter::create(&path, header(Dtype::U16)).unwrap();
        w.write_encoded(&[1, 0, 2, 0], 2).unwrap();
        assert!(!path.exists());
        w.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), HEADER_BYTES + 4);
        assert_eq!(u64::from_le_bytes(bytes[16..24].try_into().unwrap()), 2);
        assert_eq!(&bytes[HEADER_BYTES..], &[1, 0, 2, 0]);
    }

    #[test]
    fn reads_cross_shard_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.bin"), dir.path().join("b.bin"));
        write_shard(&a, Dtype::U32, &[1, 2, 3]);
        write_shard(&b, Dtype::U32, &[70_000, 5]);
        let tokens = ShardedTokens::new(vec![
            open_lmforge_shard(&a).unwrap(),
            open_lmforge_shard(&b).unwrap(),
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
