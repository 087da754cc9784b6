//! Data: reading text corpora, holding token streams, and cutting them into
//! training batches.
//!
//! Every command that reads text reads it through [`documents`] (one reader,
//! one normalisation); [`text`] holds a whole corpus in memory for
//! `train --data FILE|DIR`; [`prepare`] turns corpora into token shards
//! ([`shards`]) with bounded memory.
//!
//! Everything the trainer reads goes through [`TokenSource`]: a long sequence
//! of token ids that can be read window by window. An in-memory `Vec<u32>` is
//! one; memory-mapped token shards ([`shards::ShardSet`], written by
//! [`prepare`]) are another.

pub mod documents;
pub mod prepare;
pub mod sampler;
pub mod shards;
pub mod text;

/// A sequence of token ids that training windows are read from.
pub trait TokenSource: Send + Sync {
    /// Number of tokens in the sequence.
    fn len(&self) -> usize;
    /// Copy the tokens `start .. start + out.len()` into `out`.
    /// Panics if the range is out of bounds (callers sample valid starts).
    fn read(&self, start: usize, out: &mut [u32]);

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl TokenSource for Vec<u32> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }
    fn read(&self, start: usize, out: &mut [u32]) {
        out.copy_from_slice(&self[start..start + out.len()]);
    }
}

/// FNV-1a 64-bit hash: the tokenizer id stored in shard headers, and the key
/// that numbers an input's documents for the train/val split.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
