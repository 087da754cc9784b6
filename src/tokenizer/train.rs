//! Training a byte-level BPE tokenizer on a text corpus.
//!
//! 1. Count words. Files are read by the one document reader
//!    ([`crate::data::documents`]), so the counts are over exactly the text
//!    `prepare` and `train` see: every format it reads, documents normalised
//!    (a leading BOM removed, CRLF → LF) and handed on in pieces of at most
//!    1 MiB, each pre-tokenized on its own, as `prepare` encodes them (a piece
//!    cut at a newline between non-white-space characters gives the same
//!    words as the whole text). Pieces are gathered into batches of a few MB
//!    and counted in parallel, so memory stays bounded. Special tokens are cut
//!    out first and never merged. The result is a map word → count.
//! 2. Merge. Every word starts as its bytes (token `b` = byte `b`). With
//!    `count(pair)` = Σ over words of (occurrences in the word × word count),
//!    repeat until the vocabulary is full: take the most frequent pair (the
//!    smallest `(a, b)` ids on ties, so training is deterministic), give
//!    `bytes(a) + bytes(b)` the next id, and rewrite only the words that hold
//!    the pair (an index pair → words), adjusting the counts of the pairs
//!    around each merge. A max-heap holds the pairs; entries whose count went
//!    stale are re-pushed with the current count when they come out.
//! 3. Specials take the ids after the merged tokens.
//!
//! Cost: step 2 touches only the words that contain the merged pair, so it is
//! near linear in the corpus's distinct words rather than merges × corpus.

use super::bpe::BpeTokenizer;
use super::pretokenize::{Pattern, safe_cuts};
use crate::data::documents::{self, OnBad, PIECE_BYTES, ReadOptions};
use crate::error::{Error, Result};
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use std::collections::BinaryHeap;
use std::collections::hash_map::Entry;
use std::path::PathBuf;

/// What to train.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Final vocabulary size: 256 byte tokens + merges + specials.
    pub vocab_size: usize,
    /// Pre-tokenization split.
    pub pattern: Pattern,
    /// Special tokens, e.g. `<|endoftext|>`; ids after the merged tokens, in order.
    /// They are cut out of each piece, so one that straddles two pieces (at a
    /// hard cut, or holding a newline) is counted as words, as `prepare`
    /// encodes it.
    pub specials: Vec<String>,
    /// Skip documents that are not valid UTF-8 (counted in the report), as
    /// `prepare --on-bad-utf8 skip` does, instead of failing.
    pub skip_invalid_utf8: bool,
}

/// What training saw and did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainReport {
    /// Bytes of (normalised) text counted.
    pub corpus_bytes: u64,
    /// Distinct pre-tokenized words.
    pub distinct_words: usize,
    /// Merges learned.
    pub merges: usize,
    /// Documents skipped (from their first invalid piece on) for invalid UTF-8.
    pub skipped_documents: u64,
}

impl TrainConfig {
    /// Refuse a vocabulary too small for the 256 byte tokens and the specials.
    pub fn check(&self) -> Result<()> {
        let needed = 256 + self.specials.len();
        if self.vocab_size < needed {
            return Err(Error::Config(format!(
                "vocabulary size {} is smaller than 256 byte tokens + {} special tokens = {needed}",
                self.vocab_size,
                self.specials.len()
            )));
        }
        for (i, s) in self.specials.iter().enumerate() {
            if s.is_empty() {
                return Err(Error::Config("a special token cannot be empty".into()));
            }
            if self.specials[..i].contains(s) {
                return Err(Error::Config(format!("special token {s:?} given twice")));
            }
        }
        Ok(())
    }
}

/// Train on files (or directories, or glob patterns), streamed from disk by
/// the document reader.
pub fn train_files(files: &[PathBuf], config: &TrainConfig) -> Result<(BpeTokenizer, TrainReport)> {
    config.check()?;
    let inputs = documents::expand_inputs(files, None)?;
    let opts = ReadOptions {
        on_bad_utf8: if config.skip_invalid_utf8 {
            OnBad::Skip
        } else {
            OnBad::Error
        },
        ..ReadOptions::default()
    };
    let mut counter = WordCounter::new(config);
    let stats = documents::read_all(&inputs, &opts, &mut |piece| {
        counter.add_piece(piece.text);
        Ok(())
    })?;
    counter.flush();
    counter.report.skipped_documents = stats.skipped_bad_utf8;
    if counter.report.corpus_bytes == 0 {
        let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        return Err(Error::Data(format!(
            "empty corpus: no text to train on in {}",
            names.join(", ")
        )));
    }
    counter.finish()
}

/// Train on text already in memory, cut into pieces as files are (but not
/// normalised: it is taken as given).
pub fn train_text(text: &str, config: &TrainConfig) -> Result<(BpeTokenizer, TrainReport)> {
    config.check()?;
    if text.is_empty() {
        return Err(Error::Data("empty corpus: no text to train on".into()));
    }
    let mut counter = WordCounter::new(config);
    for piece in documents::split_text(text, PIECE_BYTES) {
        counter.add_piece(piece.to_string());
    }
    counter.flush();
    counter.finish()
}

/// Step 1: word counts.
struct WordCounter<'c> {
    config: &'c TrainConfig,
    words: FxHashMap<String, u64>,
    report: TrainReport,
    /// Pieces waiting to be counted, and their bytes.
    batch: Vec<String>,
    batch_bytes: usize,
}

/// Count pieces in batches of about this many bytes (enough to keep every
/// core busy, few enough to keep memory small).
const BATCH_BYTES: usize = 8 << 20;

/// A piece is pre-tokenized in parts of about this size, in parallel.
const PART_BYTES: usize = 256 << 10;

impl<'c> WordCounter<'c> {
    fn new(config: &'c TrainConfig) -> Self {
        WordCounter {
            config,
            words: FxHashMap::default(),
            report: TrainReport::default(),
            batch: Vec::new(),
            batch_bytes: 0,
        }
    }

    /// Add a piece (a whole text: what follows it is counted apart).
    fn add_piece(&mut self, text: String) {
        self.batch_bytes += text.len();
        self.batch.push(text);
        if self.batch_bytes >= BATCH_BYTES {
            self.flush();
        }
    }

    /// Count the words of the pieces gathered so far.
    fn flush(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        self.report.corpus_bytes += self.batch_bytes as u64;
        self.batch_bytes = 0;
        // Parts that can be pre-tokenized apart: the pieces, cut at each
        // special token, cut again where no word can span the cut.
        let mut parts: Vec<&str> = Vec::new();
        for piece in &batch {
            let mut segments = vec![piece.as_str()];
            for special in &self.config.specials {
                segments = segments
                    .into_iter()
                    .flat_map(|s| s.split(special.as_str()))
                    .collect();
            }
            for segment in segments {
                let cuts = safe_cuts(segment, segment.len() / PART_BYTES + 1);
                parts.extend(cuts.windows(2).map(|w| &segment[w[0]..w[1]]));
            }
        }
        let pattern = self.config.pattern;
        let counts = parts
            .par_iter()
            .fold(
                FxHashMap::default,
                |mut counts: FxHashMap<&str, u64>, part| {
                    for word in pattern.split(part) {
                        *counts.entry(word).or_default() += 1;
                    }
                    counts
                },
            )
            .collect::<Vec<_>>();
        for counts in counts {
            for (word, n) in counts {
                match self.words.get_mut(word) {
                    Some(total) => *total += n,
                    None => {
                        self.words.insert(word.to_string(), n);
                    }
                }
            }
        }
    }

    fn finish(self) -> Result<(BpeTokenizer, TrainReport)> {
        let mut report = self.report;
        report.distinct_words = self.words.len();
        let target = self.config.vocab_size - self.config.specials.len();
        let (tokens, merges) = learn_merges(self.words, target);
        report.merges = merges.len();
        let specials = self
            .config
            .specials
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), (tokens.len() + i) as u32))
            .collect();
        let tok =
            BpeTokenizer::from_merges("bpe", self.config.pattern, tokens, merges, specials, false)?;
        Ok((tok, report))
    }
}

#[inline]
fn pair_key(a: u32, b: u32) -> u64 {
    ((a as u64) << 32) | b as u64
}

/// Step 2: merge until there are `target` tokens (or no pair is left).
/// Returns the tokens' bytes by id and the merges in order.
fn learn_merges(words: FxHashMap<String, u64>, target: usize) -> (Vec<Vec<u8>>, Vec<(u32, u32)>) {
    let (mut seqs, counts) = byte_sequences(words);
    let mut vocab = Vocab::bytes();
    let mut pairs = PairIndex::new(&seqs, &counts);
    let mut merges = Vec::new();
    while vocab.tokens.len() < target {
        let Some(key) = pairs.pop_most_frequent() else {
            break;
        };
        let (a, b) = ((key >> 32) as u32, key as u32);
        let new = vocab.merge(a, b);
        merges.push((a, b));
        pairs.merge(key, new, &mut seqs, &counts);
    }
    (vocab.tokens, merges)
}

/// Every word as its bytes, with its count, sorted by word so that word
/// indices (and everything after) do not depend on hashing.
fn byte_sequences(words: FxHashMap<String, u64>) -> (Vec<Vec<u32>>, Vec<i64>) {
    let mut words: Vec<(String, u64)> = words.into_iter().collect();
    words.sort_unstable();
    let counts = words.iter().map(|&(_, n)| n as i64).collect();
    let seqs = words
        .into_iter()
        .map(|(w, _)| w.bytes().map(u32::from).collect())
        .collect();
    (seqs, counts)
}

/// The tokens by id (their bytes) and the id of each byte string.
struct Vocab {
    tokens: Vec<Vec<u8>>,
    ids: FxHashMap<Vec<u8>, u32>,
}

impl Vocab {
    /// The 256 byte tokens: token `b` is byte `b`.
    fn bytes() -> Self {
        let tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        let ids = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        Vocab { tokens, ids }
    }

    /// The id of `bytes(a) + bytes(b)`, new unless that byte string already
    /// has one: a string reached by two different merges keeps its first id
    /// (as the Hugging Face trainer does); the merge is still recorded.
    fn merge(&mut self, a: u32, b: u32) -> u32 {
        let mut merged = self.tokens[a as usize].clone();
        merged.extend_from_slice(&self.tokens[b as usize]);
        match self.ids.entry(merged) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => {
                self.tokens.push(e.key().clone());
                *e.insert((self.tokens.len() - 1) as u32)
            }
        }
    }
}

/// Pair counts, the words holding each pair, and a max-heap to find the most
/// frequent pair.
struct PairIndex {
    /// `count(pair)` by [`pair_key`].
    counts: FxHashMap<u64, i64>,
    /// The words holding each pair (ascending, no repeats).
    holders: FxHashMap<u64, Vec<u32>>,
    /// Max-heap on count; `Reverse(key)` puts the smallest pair first on ties.
    /// Entries may be stale: checked against `counts` when popped.
    heap: BinaryHeap<(i64, std::cmp::Reverse<u64>)>,
    /// Scratch: the pair changes of one word's merge, and the pairs that grew.
    deltas: Vec<(u64, i64)>,
    grown: Vec<u64>,
}

impl PairIndex {
    fn new(seqs: &[Vec<u32>], counts: &[i64]) -> Self {
        let mut pair_counts: FxHashMap<u64, i64> = FxHashMap::default();
        let mut holders: FxHashMap<u64, Vec<u32>> = FxHashMap::default();
        for (w, seq) in seqs.iter().enumerate() {
            for p in seq.windows(2) {
                let key = pair_key(p[0], p[1]);
                *pair_counts.entry(key).or_default() += counts[w];
                let list = holders.entry(key).or_default();
                if list.last() != Some(&(w as u32)) {
                    list.push(w as u32);
                }
            }
        }
        let heap = pair_counts
            .iter()
            .map(|(&key, &count)| (count, std::cmp::Reverse(key)))
            .collect();
        PairIndex {
            counts: pair_counts,
            holders,
            heap,
            deltas: Vec::new(),
            grown: Vec::new(),
        }
    }

    /// The most frequent pair; a popped entry whose count went stale is pushed
    /// back with its current count (if any is left) and the next one tried.
    fn pop_most_frequent(&mut self) -> Option<u64> {
        loop {
            let (count, std::cmp::Reverse(key)) = self.heap.pop()?;
            let current = self.counts.get(&key).copied().unwrap_or(0);
            if current == count {
                return Some(key);
            }
            if current > 0 {
                self.heap.push((current, std::cmp::Reverse(key)));
            }
        }
    }

    /// Rewrite every word holding pair `key` with token `new` in its place,
    /// and update the counts, holders and heap of the pairs around it.
    fn merge(&mut self, key: u64, new: u32, seqs: &mut [Vec<u32>], counts: &[i64]) {
        let (a, b) = ((key >> 32) as u32, key as u32);
        self.grown.clear();
        for w in self.holders.remove(&key).unwrap_or_default() {
            self.deltas.clear();
            merge_word(&mut seqs[w as usize], a, b, new, &mut self.deltas);
            for &(pair, delta) in &self.deltas {
                *self.counts.entry(pair).or_default() += delta * counts[w as usize];
                if delta > 0 {
                    let list = self.holders.entry(pair).or_default();
                    if list.last() != Some(&w) {
                        list.push(w);
                    }
                    self.grown.push(pair);
                }
            }
        }
        self.counts.remove(&key);
        self.grown.sort_unstable();
        self.grown.dedup();
        for &pair in &self.grown {
            self.heap
                .push((self.counts[&pair], std::cmp::Reverse(pair)));
        }
    }
}

/// Replace every non-overlapping `a b` (left to right) in `word` with `new`,
/// recording the change in pair occurrences: each merge removes `(prev, a)`,
/// `(a, b)`, `(b, next)` and adds `(prev, new)`, `(new, next)`, where `prev`
/// is the already-rewritten left neighbour (so `a b a b` gives `(new, new)`).
fn merge_word(word: &mut Vec<u32>, a: u32, b: u32, new: u32, deltas: &mut Vec<(u64, i64)>) {
    let mut out = Vec::with_capacity(word.len());
    let mut i = 0;
    while i < word.len() {
        if i + 1 < word.len() && word[i] == a && word[i + 1] == b {
            if let Some(&prev) = out.last() {
                deltas.push((pair_key(prev, a), -1));
                deltas.push((pair_key(prev, new), 1));
            }
            deltas.push((pair_key(a, b), -1));
            if let Some(&next) = word.get(i + 2) {
                deltas.push((pair_key(b, next), -1));
                deltas.push((pair_key(new, next), 1));
            }
            out.push(new);
            i += 2;
        } else {
            out.push(word[i]);
            i += 1;
        }
    }
    *word = out;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::Tokenizer;

    fn config(vocab_size: usize) -> TrainConfig {
        TrainConfig {
            vocab_size,
            pattern: Pattern::Gpt2,
            specials: vec![],
            skip_invalid_utf8: false,
        }
    }

    #[test]
    fn learns_the_textbook_merges() {
        // "aaabdaaabac": aa (4) first; then ab and aa·a tie at 2 and the
        // smaller pair (a, b) wins; then aa·ab.
        let (tok, report) = train_text("aaabdaaabac", &config(259)).unwrap();
        assert_eq!(report.merges, 3);
        let learned: Vec<String> = (256..259).map(|id| tok.decode(&[id])).collect();
        assert_eq!(learned, ["aa", "ab", "aaab"]);
        assert_eq!(tok.encode("aaabdaaabac").unwrap(), [258, 100, 258, 97, 99]);
    }

    #[test]
    fn merge_word_counts_repeated_pairs() {
        let mut word = vec![1, 2, 1, 2, 3];
        let mut deltas = Vec::new();
        merge_word(&mut word, 1, 2, 9, &mut deltas);
        assert_eq!(word, [9, 9, 3]);
        let mut net: FxHashMap<u64, i64> = FxHashMap::default();
        for (pair, d) in deltas {
            *net.entry(pair).or_default() += d;
        }
        net.retain(|_, d| *d != 0);
        let want: FxHashMap<u64, i64> = [
            (pair_key(1, 2), -2),
            (pair_key(2, 1), -1),
            (pair_key(2, 3), -1),
            (pair_key(9, 9), 1),
            (pair_key(9, 3), 1),
        ]
        .into_iter()
        .collect();
        assert_eq!(net, want);
    }

    #[test]
    fn vocabulary_too_small_is_refused() {
        let mut c = config(256);
        c.specials = vec!["<|endoftext|>".into()];
        let err = train_text("hello", &c).unwrap_err().to_string();
        assert!(err.contains("256 byte tokens + 1 special"), "{err}");
    }

    #[test]
    fn empty_and_invalid_corpora_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, "").unwrap();
        let err = train_files(&[empty], &config(300)).unwrap_err().to_string();
        assert!(
            err.contains("empty corpus") && err.contains("empty.txt"),
            "{err}"
        );

        let bad = dir.path().join("bad.txt");
        std::fs::write(&bad, b"good line\nbad \xff line\nlast good line\n").unwrap();
        let err = train_files(std::slice::from_ref(&bad), &config(300))
            .unwrap_err()
            .to_string();
        assert!(err.contains("offset 14"), "{err}");

        // Skipping drops the whole document, as prepare does; BOM and CRLF
        // are normalised as everywhere else.
        let good = dir.path().join("good.txt");
        std::fs::write(&good, "\u{feff}good line\r\n").unwrap();
        let mut skip = config(300);
        skip.skip_invalid_utf8 = true;
        let (_, report) = train_files(&[bad, good], &skip).unwrap();
        assert_eq!(report.skipped_documents, 1);
        assert_eq!(report.corpus_bytes, "good line\n".len() as u64);
    }
}
