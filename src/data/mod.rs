//! Data: reading text corpora, holding token streams, and cutting them into
//! training batches.
//!
//! Everything the trainer reads goes through [`TokenSource`]: a long sequence
//! of token ids that can be read window by window. An in-memory `Vec<u32>` is
//! one; memory-mapped token shards ([`shards::ShardSet`], written by
//! [`prepare`]) are another.

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
