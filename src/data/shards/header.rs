//! The lmforge shard format: a [`HEADER_BYTES`]-byte header followed by the
//! tokens, little-endian, `u16` when the vocabulary has at most 65,536 ids,
//! else `u32` ([`Dtype`]):
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

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Bytes before the first token of an lmforge shard.
pub const HEADER_BYTES: usize = 64;
/// First 8 bytes of an lmforge shard.
pub const MAGIC: [u8; 8] = *b"LMFSHARD";
/// Version of the shard header written by this code.
pub const VERSION: u32 = 1;

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
        let Some(bytes) = bytes.first_chunk::<HEADER_BYTES>() else {
            return Err(Error::format(
                path,
                format!(
                    "truncated shard: {} bytes, shorter than the {HEADER_BYTES}-byte header",
                    bytes.len()
                ),
            ));
        };
        if bytes[0..8] != MAGIC {
            return Err(Error::format(
                path,
                "not an lmforge shard (bad magic; expected \"LMFSHARD\")",
            ));
        }
        let u32_at =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let u64_at = |i: usize| u64::from(u32_at(i)) | u64::from(u32_at(i + 4)) << 32;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_is_64_bytes() {
        let h = ShardHeader {
            dtype: Dtype::U32,
            tokens: 123_456_789_012,
            vocab_size: 70_000,
            tokenizer_id: 0x0123_4567_89ab_cdef,
            tokenizer_kind: "char".into(),
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
}
