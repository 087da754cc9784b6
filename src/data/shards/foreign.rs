//! The shard layouts of other projects, read as they are:
//!
//! - nanoGPT: `train.bin` and `val.bin`, raw little-endian `u16` tokens with
//!   no header; `np.memmap(path, dtype=np.uint16, mode="r")`. `val.bin` may
//!   be missing.
//! - llm.c: `*_train_*.bin` and `*_val_*.bin` (sorted by name), each a header
//!   of 256 little-endian `i32` (magic 20240520, version 1, token count at
//!   index 2) then `u16` tokens;
//!   `np.memmap(path, dtype=np.uint16, mode="r", offset=1024)`.
//!
//! Neither records a vocabulary, so `ShardSet::vocab_size` is `None` for them.

use super::header::Dtype;
use super::layout::{NANOGPT_TRAIN, NANOGPT_VAL, llmc_files};
use super::reader::{MappedShard, Splits, read_prefix};
use crate::error::{Error, Result};
use std::path::Path;

/// llm.c's shard header: 256 `i32`, magic first, version second, count third.
const LLMC_HEADER_BYTES: usize = 256 * 4;
const LLMC_MAGIC: i32 = 20240520;
const LLMC_VERSION_U16: i32 = 1;

/// nanoGPT's `train.bin` and (if there is one) `val.bin`.
pub(super) fn open_nanogpt(dir: &Path) -> Result<Splits> {
    Ok(Splits {
        train: open_raw_u16(&dir.join(NANOGPT_TRAIN))?,
        val: open_raw_u16(&dir.join(NANOGPT_VAL))?,
    })
}

/// A headerless file of `u16` tokens (none if it does not exist or is empty).
fn open_raw_u16(path: &Path) -> Result<Vec<MappedShard>> {
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
    let len = usize::try_from(size / 2)
        .map_err(|_| Error::format(path, "too large to map on this machine"))?;
    Ok(vec![MappedShard::open(path, 0, Dtype::U16, len)?])
}

/// llm.c's shards, each split sorted by name.
pub(super) fn open_llmc(dir: &Path) -> Result<Splits> {
    let (train, val) = llmc_files(dir)?;
    let open_all = |paths: &[std::path::PathBuf]| -> Result<Vec<MappedShard>> {
        paths.iter().map(|p| open_llmc_shard(p)).collect()
    };
    Ok(Splits {
        train: open_all(&train)?,
        val: open_all(&val)?,
    })
}

/// Map an llm.c shard after checking its header.
fn open_llmc_shard(path: &Path) -> Result<MappedShard> {
    let mut head = [0u8; LLMC_HEADER_BYTES];
    let n = read_prefix(path, &mut head)?;
    if n < LLMC_HEADER_BYTES {
        return Err(Error::format(
            path,
            format!("truncated llm.c shard: {n} bytes, shorter than the 1024-byte header"),
        ));
    }
    let int = |i: usize| {
        let b = &head[i * 4..i * 4 + 4];
        i32::from_le_bytes([b[0], b[1], b[2], b[3]])
    };
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
