//! The character vocabulary, gathered in a first streaming pass over the inputs
//! (the course's `vocab.txt` idea, without holding the corpus in memory).
//!
//! Every document's characters are counted in parallel batches. The vocabulary
//! is the sorted set of characters seen, then `<|endoftext|>`; with
//! `--char-vocab-max N`, only the N most frequent characters are kept (ties go to
//! the smaller character) and `<unk>` is added after `<|endoftext|>`.

use super::PrepareOptions;
use super::pipeline::{self, Item};
use super::progress::Progress;
use crate::data::documents::{InputFile, Piece};
use crate::error::{Error, Result};
use crate::tokenizer::CharTokenizer;
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

/// How often each character occurs.
#[derive(Debug, Clone, PartialEq)]
pub struct CharCounts {
    /// ASCII counted in an array: most text is mostly ASCII.
    ascii: [u64; 128],
    other: HashMap<char, u64>,
}

impl Default for CharCounts {
    fn default() -> Self {
        CharCounts {
            ascii: [0; 128],
            other: HashMap::new(),
        }
    }
}

impl CharCounts {
    pub fn add_text(&mut self, text: &str) {
        for c in text.chars() {
            if c.is_ascii() {
                self.ascii[c as usize] += 1;
            } else {
                *self.other.entry(c).or_insert(0) += 1;
            }
        }
    }

    pub fn merge(&mut self, other: &CharCounts) {
        for (a, b) in self.ascii.iter_mut().zip(other.ascii) {
            *a += b;
        }
        for (&c, &n) in &other.other {
            *self.other.entry(c).or_insert(0) += n;
        }
    }

    /// `(character, count)` for every character seen.
    fn seen(&self) -> Vec<(char, u64)> {
        let ascii = (0u8..128)
            .map(|b| (b as char, self.ascii[b as usize]))
            .filter(|&(_, n)| n > 0);
        ascii
            .chain(self.other.iter().map(|(&c, &n)| (c, n)))
            .collect()
    }

    /// The tokenizer: sorted characters (the `max` most frequent, if given),
    /// `<|endoftext|>`, and `<unk>` when capped.
    pub fn tokenizer(&self, max: Option<usize>) -> Result<CharTokenizer> {
        let mut seen = self.seen();
        if let Some(max) = max {
            if max == 0 {
                return Err(Error::Config("--char-vocab-max must be at least 1".into()));
            }
            seen.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            seen.truncate(max);
        }
        let mut chars: Vec<char> = seen.into_iter().map(|(c, _)| c).collect();
        chars.sort_unstable();
        if chars.is_empty() {
            return Err(Error::Data("no text found in the inputs".into()));
        }
        CharTokenizer::with_specials(chars, true, max.is_some())
    }
}

/// Count the characters of every input in a streaming pass and build the tokenizer.
pub fn char_tokenizer(inputs: &[InputFile], opts: &PrepareOptions) -> Result<CharTokenizer> {
    let total = inputs.iter().map(|i| i.bytes).sum();
    let mut shown = Progress::new(opts.progress, total, "vocabulary");
    let mut documents = 0;
    let bytes_read = AtomicU64::new(0);
    let mut counts = CharCounts::default();
    let work = |pieces: Vec<Piece>| -> Result<CharCounts> {
        let mut c = CharCounts::default();
        for p in &pieces {
            c.add_text(&p.text);
        }
        Ok(c)
    };
    pipeline::run(
        inputs,
        &opts.read_options(inputs),
        opts.threads,
        &bytes_read,
        &work,
        &mut |item| {
            match item {
                Item::Batches { results, stats } => {
                    results.iter().for_each(|c| counts.merge(c));
                    documents += stats.documents;
                }
                Item::InputDone { stats, .. } => documents += stats.documents,
            }
            let bytes = bytes_read.load(std::sync::atomic::Ordering::Relaxed);
            shown.update(bytes, 0, documents);
            Ok(())
        },
    )?;
    shown.finish();
    counts.tokenizer(opts.char_vocab_max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::Tokenizer;

    #[test]
    fn vocabulary_is_sorted_then_eot() {
        let mut counts = CharCounts::default();
        counts.add_text("héllo\n");
        let tok = counts.tokenizer(None).unwrap();
        assert_eq!(tok.chars(), &['\n', 'h', 'l', 'o', 'é']);
        assert_eq!(tok.eot_token(), Some(5));
        assert_eq!(tok.vocab_size(), 6);
    }

    #[test]
    fn capped_vocabulary_keeps_the_most_frequent_and_adds_unk() {
        let mut a = CharCounts::default();
        a.add_text("aaab");
        let mut b = CharCounts::default();
        b.add_text("ccéé");
        a.merge(&b);
        let tok = a.tokenizer(Some(2)).unwrap();
        // a: 3, c: 2, é: 2 → keep a and c (ties go to the smaller character).
        assert_eq!(tok.chars(), &['a', 'c']);
        assert_eq!((tok.eot_id(), tok.unk_id()), (Some(2), Some(3)));
        assert_eq!(tok.encode("abé").unwrap(), vec![0, 3, 3]);
    }
}
