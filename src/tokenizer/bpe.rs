//! Byte-level byte-pair encoding (BPE), as in GPT-2: text is UTF-8 bytes, every
//! byte is a token, and a list of merges joins adjacent tokens into longer ones.
//!
//! Encoding `text`:
//! 1. cut out special tokens (`<|endoftext|>`), which map straight to their ids;
//! 2. split the rest into pieces with the pre-tokenizer ([`Pattern`]);
//! 3. turn each piece into its byte tokens, then repeatedly merge the adjacent
//!    pair with the lowest merge rank (the leftmost one on ties) until no pair
//!    has a merge. The pair ranks of a piece sit in a vector and only the two
//!    neighbours of a merge are looked up again, as in tiktoken.
//!
//! A piece that is already one token skips step 3 when `ignore_merges` is set
//! (tiktoken always does this; Hugging Face only with `ignore_merges`), and the
//! result of step 3 is cached per distinct piece during one `encode` call.
//!
//! Two ways to define the merges:
//! - tiktoken ranks (GPT-2's `r50k_base`): token `r` is a byte string of rank
//!   `r`, and two adjacent tokens merge when their concatenation has a rank;
//!   the pair's rank is that rank. Every way of cutting a token in two is a merge.
//! - Hugging Face `tokenizer.json`: an ordered list of merges `(a, b)`, rank =
//!   position in the list; only the listed pairs merge.
//!
//! Saved as a Hugging Face `tokenizer.json` whose vocabulary strings use GPT-2's
//! byte-to-unicode alphabet (each byte is one printable character), so that
//! `tokenizers.Tokenizer.from_file` gives the same ids.

use super::Tokenizer;
use super::pretokenize::Pattern;
use crate::error::{Error, Result};
use base64::Engine as _;
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use serde_json::Value;
use std::io::Read;
use std::path::Path;

/// GPT-2's ranks, tiktoken's `r50k_base.tiktoken` (sha256 306cd27f…dd930),
/// gzipped: 366 KB instead of 836 KB.
static R50K_BASE_GZ: &[u8] = include_bytes!("assets/r50k_base.tiktoken.gz");

/// GPT-2's end-of-text token.
pub const ENDOFTEXT: &str = "<|endoftext|>";

/// Pieces longer than this many bytes merge with a heap ([`BpeTokenizer::merge_long`]).
const LONG_PIECE: usize = 64;

/// Ranks at or above this never merge.
const NO_MERGE: u32 = u32::MAX;

/// How the pair ranks were defined (see the module documentation).
#[derive(Debug, Clone)]
enum Merges {
    /// tiktoken ranks: any two tokens whose concatenation is a token merge.
    Ranks,
    /// An explicit list; merge `i` has rank `i`.
    Listed(Vec<(u32, u32)>),
}

/// A byte-level BPE tokenizer (GPT-2's, one trained by lmforge, or one read
/// from a Hugging Face `tokenizer.json`).
#[derive(Debug, Clone)]
pub struct BpeTokenizer {
    kind: &'static str,
    pattern: Pattern,
    /// The bytes of each id; ids run 0..N with no gap and no token is empty.
    tokens: Vec<Vec<u8>>,
    /// Ordinary (non-special) tokens by their bytes.
    ids: FxHashMap<Vec<u8>, u32>,
    byte_ids: [u32; 256],
    merges: Merges,
    /// `(a << 32) | b` → (rank, id of the merged token).
    pair_ranks: FxHashMap<u64, (u32, u32)>,
    /// Special tokens, matched in the text before pre-tokenization.
    specials: Vec<(String, u32)>,
    ignore_merges: bool,
}

#[inline]
fn pair_key(a: u32, b: u32) -> u64 {
    ((a as u64) << 32) | b as u64
}

/// GPT-2's tokenizer: exactly tiktoken's `gpt2` encoding (`r50k_base` ranks,
/// GPT-2 split, `<|endoftext|>` = 50256), read from ranks embedded in the binary.
pub fn gpt2() -> Result<BpeTokenizer> {
    let origin = Path::new("<embedded r50k_base.tiktoken.gz>");
    let mut text = String::new();
    flate2::read::GzDecoder::new(R50K_BASE_GZ)
        .read_to_string(&mut text)
        .map_err(|e| Error::io(origin, e))?;
    let ranks = parse_tiktoken(&text, origin)?;
    BpeTokenizer::from_ranks(
        "gpt2",
        Pattern::Gpt2,
        ranks,
        vec![(ENDOFTEXT.to_string(), 50256)],
    )
}

/// Parse tiktoken's rank file: one `base64(token bytes) rank` per line.
pub fn parse_tiktoken(text: &str, path: &Path) -> Result<Vec<Vec<u8>>> {
    let mut ranks = Vec::new();
    for (line_no, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = |what: &str| Error::format(path, format!("line {}: {what}", line_no + 1));
        let (token, rank) = line
            .split_once(' ')
            .ok_or_else(|| bad("expected `base64 rank`"))?;
        let token = base64::engine::general_purpose::STANDARD
            .decode(token)
            .map_err(|e| bad(&format!("bad base64: {e}")))?;
        if token.is_empty() {
            return Err(bad("empty token: every rank needs at least one byte"));
        }
        let rank: usize = rank
            .parse()
            .map_err(|_| bad(&format!("rank {rank:?} is not a whole number")))?;
        if rank != ranks.len() {
            return Err(bad(&format!(
                "rank {rank} out of order: expected {}",
                ranks.len()
            )));
        }
        ranks.push(token);
    }
    Ok(ranks)
}

/// GPT-2's reversible map from bytes to printable characters: printable Latin-1
/// bytes stand for themselves, the others for `U+0100 + n` in byte order.
pub fn byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        table[b as usize] = if printable {
            b as char
        } else {
            n += 1;
            char::from_u32(255 + n).expect("below the surrogates")
        };
    }
    table
}

/// Token bytes as a string of the byte-to-unicode alphabet.
pub fn bytes_to_unicode(bytes: &[u8], table: &[char; 256]) -> String {
    bytes.iter().map(|&b| table[b as usize]).collect()
}

impl BpeTokenizer {
    /// A tokenizer defined by tiktoken ranks (`ranks[r]` = the bytes of token `r`).
    pub fn from_ranks(
        kind: &'static str,
        pattern: Pattern,
        ranks: Vec<Vec<u8>>,
        specials: Vec<(String, u32)>,
    ) -> Result<Self> {
        let mut tok = Self::with_tokens(kind, pattern, ranks, specials, true)?;
        // `with_tokens` checked that every id fits in u32.
        for (id, token) in tok.tokens.iter().enumerate() {
            for cut in 1..token.len() {
                if let (Some(&a), Some(&b)) =
                    (tok.ids.get(&token[..cut]), tok.ids.get(&token[cut..]))
                {
                    tok.pair_ranks
                        .insert(pair_key(a, b), (id as u32, id as u32));
                }
            }
        }
        Ok(tok)
    }

    /// A tokenizer defined by a merge list (merge `i` has rank `i`).
    pub fn from_merges(
        kind: &'static str,
        pattern: Pattern,
        tokens: Vec<Vec<u8>>,
        merges: Vec<(u32, u32)>,
        specials: Vec<(String, u32)>,
        ignore_merges: bool,
    ) -> Result<Self> {
        // Ranks are u32 below `NO_MERGE` (which never merges).
        if merges.len() >= NO_MERGE as usize {
            return Err(Error::Data(format!("{} merges are too many", merges.len())));
        }
        let mut tok = Self::with_tokens(kind, pattern, tokens, specials, ignore_merges)?;
        for (rank, &(a, b)) in merges.iter().enumerate() {
            let rank = rank as u32;
            let (left, right) = (tok.token_bytes(a)?, tok.token_bytes(b)?);
            let merged = [left, right].concat();
            let &id = tok.ids.get(&merged).ok_or_else(|| {
                Error::Data(format!(
                    "merge {rank} ({} + {}) makes {}, which is not in the vocabulary",
                    show_bytes(left),
                    show_bytes(right),
                    show_bytes(&merged)
                ))
            })?;
            tok.pair_ranks.entry(pair_key(a, b)).or_insert((rank, id));
        }
        tok.merges = Merges::Listed(merges);
        Ok(tok)
    }

    /// The common part of both constructors: vocabulary, byte tokens, specials.
    /// `tokens` may leave empty the ids that `specials` fill (or one past its
    /// end); afterwards every id must have bytes.
    fn with_tokens(
        kind: &'static str,
        pattern: Pattern,
        mut tokens: Vec<Vec<u8>>,
        specials: Vec<(String, u32)>,
        ignore_merges: bool,
    ) -> Result<Self> {
        let count = tokens.len() + specials.len();
        if u32::try_from(count).is_err() {
            return Err(Error::Data(format!(
                "{count} tokens are more than 32-bit token ids can number"
            )));
        }
        let ids = ordinary_ids(&tokens)?;
        let mut byte_ids = [0u32; 256];
        for b in 0..=255u8 {
            byte_ids[b as usize] = *ids.get(&[b][..]).ok_or_else(|| {
                Error::Data(format!(
                    "byte 0x{b:02x} has no token: not a byte-level vocabulary"
                ))
            })?;
        }
        place_specials(&mut tokens, &specials)?;
        if let Some(id) = tokens.iter().position(|t| t.is_empty()) {
            return Err(Error::Data(format!(
                "token id {id} has no token: ids must run from 0 to {} with no gap",
                tokens.len() - 1
            )));
        }
        Ok(BpeTokenizer {
            kind,
            pattern,
            tokens,
            ids,
            byte_ids,
            merges: Merges::Ranks,
            pair_ranks: FxHashMap::default(),
            specials,
            ignore_merges,
        })
    }

    fn token_bytes(&self, id: u32) -> Result<&[u8]> {
        self.tokens
            .get(id as usize)
            .map(Vec::as_slice)
            .ok_or_else(|| Error::Data(format!("token id {id} is not in the vocabulary")))
    }

    /// The pre-tokenization pattern.
    pub fn pattern(&self) -> Pattern {
        self.pattern
    }

    /// The special tokens and their ids.
    pub fn specials(&self) -> &[(String, u32)] {
        &self.specials
    }

    /// The id of a special token, e.g. `<|endoftext|>`.
    pub fn special_id(&self, content: &str) -> Option<u32> {
        self.specials
            .iter()
            .find(|(c, _)| c == content)
            .map(|&(_, id)| id)
    }

    /// A copy with the special tokens `names` appended at ids `vocab_size()..`,
    /// in order, skipping those it already has (e.g. the chat template's
    /// `<|user|>`; see [`crate::chat`]). Saved in `tokenizer.json` as
    /// `added_tokens`. A model using it needs `vocab_size()` embedding rows.
    pub fn with_added_specials(&self, names: &[&str]) -> Result<BpeTokenizer> {
        let mut tok = self.clone();
        for &name in names {
            if name.is_empty() {
                return Err(Error::Data("a special token cannot be empty".into()));
            }
            if tok.special_id(name).is_some() {
                continue;
            }
            let id = u32::try_from(tok.tokens.len())
                .map_err(|_| Error::Data("too many tokens for 32-bit token ids".into()))?;
            tok.tokens.push(name.as_bytes().to_vec());
            tok.specials.push((name.to_string(), id));
        }
        // No longer GPT-2's vocabulary: the name says so in logs and metadata.
        if tok.tokens.len() != self.tokens.len() {
            tok.kind = "bpe";
        }
        Ok(tok)
    }

    /// Rank and merged id of the pair `(a, b)`.
    #[inline]
    fn pair(&self, a: u32, b: u32) -> (u32, u32) {
        self.pair_ranks
            .get(&pair_key(a, b))
            .copied()
            .unwrap_or((NO_MERGE, 0))
    }

    /// Merge `parts` in place with every pair of rank below `max_rank`.
    /// `ranks` is scratch space: `ranks[i]` is the pair `(parts[i], parts[i+1])`.
    fn merge(&self, parts: &mut Vec<u32>, ranks: &mut Vec<(u32, u32)>, max_rank: u32) {
        ranks.clear();
        ranks.extend(parts.windows(2).map(|w| self.pair(w[0], w[1])));
        loop {
            let mut best = (max_rank, usize::MAX);
            for (i, &(rank, _)) in ranks.iter().enumerate() {
                if rank < best.0 {
                    best = (rank, i);
                }
            }
            let i = best.1;
            if i == usize::MAX {
                return;
            }
            parts[i] = ranks[i].1;
            parts.remove(i + 1);
            ranks.remove(i);
            if i > 0 {
                ranks[i - 1] = self.pair(parts[i - 1], parts[i]);
            }
            if i < ranks.len() {
                ranks[i] = self.pair(parts[i], parts[i + 1]);
            }
        }
    }

    /// [`Self::merge`] for long pieces, in O(n log n) instead of O(n²): the
    /// pieces are a linked list (`next`/`prev` by original byte position, so
    /// position order is kept) and the pairs sit in a min-heap keyed by
    /// (rank, position). An entry is stale if its left token died or its
    /// pair now has another rank; stale entries are dropped when popped.
    fn merge_long(&self, parts: &mut Vec<u32>) {
        use std::cmp::Reverse;
        const NONE: usize = usize::MAX;
        let n = parts.len();
        let mut next: Vec<usize> = (1..=n).map(|i| if i == n { NONE } else { i }).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| if i == 0 { NONE } else { i - 1 }).collect();
        let mut alive = vec![true; n];
        let mut heap = std::collections::BinaryHeap::with_capacity(n);
        for i in 0..n - 1 {
            let (rank, _) = self.pair(parts[i], parts[i + 1]);
            if rank != NO_MERGE {
                heap.push(Reverse((rank, i)));
            }
        }
        while let Some(Reverse((rank, i))) = heap.pop() {
            let j = next[i];
            if !alive[i] || j == NONE {
                continue;
            }
            let (current, merged) = self.pair(parts[i], parts[j]);
            if current != rank {
                continue;
            }
            parts[i] = merged;
            alive[j] = false;
            next[i] = next[j];
            if next[j] != NONE {
                prev[next[j]] = i;
                let (r, _) = self.pair(merged, parts[next[j]]);
                if r != NO_MERGE {
                    heap.push(Reverse((r, i)));
                }
            }
            if prev[i] != NONE {
                let (r, _) = self.pair(parts[prev[i]], merged);
                if r != NO_MERGE {
                    heap.push(Reverse((r, prev[i])));
                }
            }
        }
        let mut k = 0;
        for i in 0..n {
            if alive[i] {
                parts[k] = parts[i];
                k += 1;
            }
        }
        parts.truncate(k);
    }

    /// Encode text with no special tokens: `<|endoftext|>` is ordinary text.
    pub fn encode_ordinary(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3);
        self.encode_ordinary_into(text, &mut out, &mut PieceCache::default());
        out
    }

    fn encode_ordinary_into<'t>(
        &self,
        text: &'t str,
        out: &mut Vec<u32>,
        cache: &mut PieceCache<'t>,
    ) {
        for piece in self.pattern.split(text) {
            let bytes = piece.as_bytes();
            if bytes.len() == 1 {
                out.push(self.byte_ids[bytes[0] as usize]);
                continue;
            }
            if self.ignore_merges
                && let Some(&id) = self.ids.get(bytes)
            {
                out.push(id);
                continue;
            }
            if let Some(&(start, len)) = cache.pieces.get(piece) {
                out.extend_from_slice(&cache.arena[start as usize..(start + len) as usize]);
                continue;
            }
            let mut parts = std::mem::take(&mut cache.parts);
            parts.clear();
            parts.extend(bytes.iter().map(|&b| self.byte_ids[b as usize]));
            if parts.len() > LONG_PIECE {
                self.merge_long(&mut parts);
            } else {
                self.merge(&mut parts, &mut cache.ranks, NO_MERGE);
            }
            out.extend_from_slice(&parts);
            if cache.arena.len() < PieceCache::MAX_ARENA {
                let start = cache.arena.len() as u32;
                cache.arena.extend_from_slice(&parts);
                cache.pieces.insert(piece, (start, parts.len() as u32));
            }
            cache.parts = parts;
        }
    }

    /// Encode text in which the special tokens are recognised.
    pub fn encode_with_special(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3);
        let mut cache = PieceCache::default();
        // Next occurrence of each special at or after `start`, searched again
        // only once passed, so that absent specials cost one scan in total.
        let find = |k: usize, from: usize| {
            text[from..]
                .find(self.specials[k].0.as_str())
                .map(|p| p + from)
        };
        let mut next: Vec<Option<usize>> = (0..self.specials.len()).map(|k| find(k, 0)).collect();
        let mut start = 0;
        loop {
            let mut found: Option<(usize, usize)> = None; // (position, special index)
            for (k, next) in next.iter_mut().enumerate() {
                if matches!(*next, Some(p) if p < start) {
                    *next = find(k, start);
                }
                if let Some(p) = *next {
                    let better = match found {
                        None => true,
                        // On a tie the longer special wins.
                        Some((q, j)) => {
                            p < q || (p == q && self.specials[k].0.len() > self.specials[j].0.len())
                        }
                    };
                    if better {
                        found = Some((p, k));
                    }
                }
            }
            let Some((pos, k)) = found else { break };
            self.encode_ordinary_into(&text[start..pos], &mut out, &mut cache);
            out.push(self.specials[k].1);
            start = pos + self.specials[k].0.len();
        }
        self.encode_ordinary_into(&text[start..], &mut out, &mut cache);
        out
    }

    /// Encode many documents on rayon's threads (specials recognised).
    pub fn encode_batch(&self, texts: &[&str]) -> Vec<Vec<u32>> {
        texts
            .par_iter()
            .map(|t| self.encode_with_special(t))
            .collect()
    }

    /// Encode one long text on rayon's threads, giving the same ids as
    /// [`Self::encode_with_special`]. The text is cut into about `chunks`
    /// parts at newlines that are both preceded and followed by a
    /// non-white-space character: no piece or special token can span such a
    /// cut (see `safe_cuts`).
    pub fn encode_parallel(&self, text: &str, chunks: usize) -> Vec<u32> {
        if chunks <= 1 || self.specials.iter().any(|(s, _)| s.contains('\n')) {
            return self.encode_with_special(text);
        }
        let cuts = super::pretokenize::safe_cuts(text, chunks);
        let parts: Vec<&str> = cuts.windows(2).map(|w| &text[w[0]..w[1]]).collect();
        let encoded = self.encode_batch(&parts);
        encoded.concat()
    }

    /// Derive the merge list of a ranks-defined tokenizer the way Hugging Face's
    /// converter does: token `r` is the merge of the two parts that BPE with
    /// the ranks below `r` leaves of its bytes.
    fn merge_list(&self) -> Result<Vec<(u32, u32)>> {
        if let Merges::Listed(merges) = &self.merges {
            return Ok(merges.clone());
        }
        let mut merges = Vec::new();
        let (mut parts, mut ranks) = (Vec::new(), Vec::new());
        for (id, token) in self.tokens.iter().enumerate() {
            if token.len() < 2 || self.special_id_of(id as u32) {
                continue;
            }
            parts.clear();
            parts.extend(token.iter().map(|&b| self.byte_ids[b as usize]));
            self.merge(&mut parts, &mut ranks, id as u32);
            match parts[..] {
                [a, b] => merges.push((a, b)),
                _ => {
                    return Err(Error::Data(format!(
                        "token {id} cannot be written as one merge of lower-ranked tokens"
                    )));
                }
            }
        }
        Ok(merges)
    }

    fn special_id_of(&self, id: u32) -> bool {
        self.specials.iter().any(|&(_, s)| s == id)
    }

    /// The Hugging Face `tokenizer.json` of this tokenizer.
    pub fn to_hf_json(&self) -> Result<serde_json::Value> {
        use serde_json::json;
        let table = byte_to_char();
        let mut vocab = serde_json::Map::new();
        // A special token inside the ordinary ids' range is listed in the vocabulary
        // too (as GPT-2's files do): Hugging Face tokenizers mishandle a hole there.
        let last_ordinary = (0..self.tokens.len())
            .rev()
            .find(|&id| !self.special_id_of(id as u32))
            .unwrap_or(0);
        for (id, token) in self.tokens.iter().enumerate() {
            if !self.special_id_of(id as u32) || id < last_ordinary {
                vocab.insert(bytes_to_unicode(token, &table), id.into());
            }
        }
        let merges: Vec<String> = self
            .merge_list()?
            .into_iter()
            .map(|(a, b)| {
                format!(
                    "{} {}",
                    bytes_to_unicode(&self.tokens[a as usize], &table),
                    bytes_to_unicode(&self.tokens[b as usize], &table)
                )
            })
            .collect();
        let added: Vec<_> = self
            .specials
            .iter()
            .map(|(content, id)| {
                json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        let byte_level = |use_regex: bool| {
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                   "use_regex": use_regex})
        };
        let pre_tokenizer = match self.pattern {
            Pattern::Gpt2 => byte_level(true),
            pattern => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": pattern.regex()},
                 "behavior": "Isolated", "invert": false},
                byte_level(false)
            ]}),
        };
        Ok(json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": null,
            "decoder": byte_level(true),
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": false, "byte_fallback": false,
                "ignore_merges": self.ignore_merges,
                "vocab": vocab, "merges": merges
            }
        }))
    }

    /// Read a byte-level BPE `tokenizer.json` (written by lmforge or by Hugging
    /// Face tooling, e.g. GPT-2's). Normalizers, other pre-tokenizers and
    /// decoders, subword prefixes, byte fallback and added tokens that are not
    /// special or strip spaces are refused rather than half-supported
    /// ([`super::load`] gives such files to [`super::hf::HfTokenizer`]). The file is
    /// untrusted: anything malformed is an [`Error::Format`] naming the entry.
    pub fn from_hf_json(json: &Value, path: &Path) -> Result<Self> {
        Self::read_hf_json(json, path)?.map_err(|not_own| Error::format(path, not_own))
    }

    /// [`Self::from_hf_json`], telling apart a malformed file (the outer
    /// error) from a well-formed one outside the fast path (`Ok(Err(why))`:
    /// a pipeline it does not implement, or a vocabulary without a token for
    /// every byte), which [`super::load`] gives to `tokenizers`.
    pub(super) fn read_hf_json(
        json: &Value,
        path: &Path,
    ) -> Result<std::result::Result<Self, String>> {
        let bad = |message: String| Error::format(path, message);
        let (pattern, ignore_merges) = match hf_header(json) {
            Ok(header) => header,
            Err(not_own) => return Ok(Err(not_own)),
        };
        let vocab = read_vocab(&json["model"]).map_err(bad)?;
        let specials = hf_added_tokens(&json["added_tokens"]).map_err(bad)?;
        let tokens = hf_lay_out(&vocab, &specials).map_err(bad)?;
        let merges = hf_merges(&json["model"]["merges"], &vocab).map_err(bad)?;
        if let Err(not_own) = hf_full_byte_alphabet(&tokens) {
            return Ok(Err(not_own));
        }
        Self::from_merges("bpe", pattern, tokens, merges, specials, ignore_merges)
            .map(Ok)
            .map_err(|e| bad(e.to_string()))
    }

    /// Read a `tokenizer.json` file (see [`Self::from_hf_json`]).
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_hf_json(&read_json(path)?, path)
    }

    /// Write the ordinary tokens in tiktoken's format (`base64 rank` per line;
    /// rank = id). Specials are not part of that format.
    pub fn save_tiktoken(&self, path: &Path) -> Result<()> {
        let mut text = String::new();
        for (id, token) in self.tokens.iter().enumerate() {
            if !self.special_id_of(id as u32) {
                text.push_str(&base64::engine::general_purpose::STANDARD.encode(token));
                text.push(' ');
                text.push_str(&id.to_string());
                text.push('\n');
            }
        }
        crate::fsutil::write_atomic_bytes(path, text.as_bytes())
    }
}

/// Ordinary tokens by their bytes (empty slots skipped); a token listed twice is
/// an error.
fn ordinary_ids(tokens: &[Vec<u8>]) -> Result<FxHashMap<Vec<u8>, u32>> {
    let mut ids = FxHashMap::default();
    for (id, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            continue;
        }
        // `with_tokens` checked that every id fits in u32.
        if let Some(first) = ids.insert(token.clone(), id as u32) {
            return Err(Error::Data(format!(
                "token {} appears twice in the vocabulary, as ids {first} and {id}",
                show_bytes(token)
            )));
        }
    }
    Ok(ids)
}

/// Put each special token at its id: an empty slot, a slot already holding
/// the same bytes (a special also in the vocabulary), or past the end but
/// within `tokens.len() + specials.len()`, so that no id sizes an allocation.
fn place_specials(tokens: &mut Vec<Vec<u8>>, specials: &[(String, u32)]) -> Result<()> {
    let limit = tokens.len() + specials.len();
    let mut seen: FxHashMap<&str, u32> = FxHashMap::default();
    for (content, id) in specials {
        if content.is_empty() {
            return Err(Error::Data("a special token cannot be empty".into()));
        }
        let shown = show_str(content);
        if let Some(first) = seen
            .insert(content.as_str(), *id)
            .filter(|first| first != id)
        {
            return Err(Error::Data(format!(
                "special token {shown} has two ids, {first} and {id}"
            )));
        }
        let slot = *id as usize;
        if slot >= limit {
            return Err(Error::Data(format!(
                "special token {shown} has id {id}, beyond the {} tokens and {} special tokens",
                tokens.len(),
                specials.len()
            )));
        }
        if tokens.len() <= slot {
            tokens.resize(slot + 1, Vec::new());
        }
        let token = &mut tokens[slot];
        if !token.is_empty() && token != content.as_bytes() {
            return Err(Error::Data(format!(
                "special token {shown} has id {id}, already taken by {}",
                show_bytes(token)
            )));
        }
        *token = content.as_bytes().to_vec();
    }
    Ok(())
}

// Reading an untrusted `tokenizer.json` (shared with `char.rs`): each step
// returns what is wrong and where, and the caller adds the path.

/// Read and parse a JSON file.
pub(super) fn read_json(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::format(path, format!("not valid JSON: {e}")))
}

/// Check the model header (BPE, nothing unsupported); gives the pattern and
/// `ignore_merges`. [`super::load`] sends a file this refuses to
/// [`super::hf::HfTokenizer`].
fn hf_header(json: &Value) -> Result<(Pattern, bool), String> {
    let model = &json["model"];
    if model["type"] != "BPE" {
        return Err(expected("model.type", &model["type"], "\"BPE\""));
    }
    if !json["normalizer"].is_null() {
        return Err("normalizers are not supported (normalizer must be null)".into());
    }
    for field in ["continuing_subword_prefix", "end_of_word_suffix", "dropout"] {
        if !model[field].is_null() && model[field] != "" {
            return Err(format!("model.{field} is not supported"));
        }
    }
    let pattern = hf_pattern(&json["pre_tokenizer"]).ok_or_else(|| {
        format!(
            "unsupported pre_tokenizer {}: expected ByteLevel (GPT-2 split) or a \
             Split with the GPT-2 or GPT-4 regex followed by ByteLevel",
            show_json(&json["pre_tokenizer"])
        )
    })?;
    let ignore_merges = match &model["ignore_merges"] {
        Value::Null => false,
        Value::Bool(b) => *b,
        other => return Err(expected("model.ignore_merges", other, "true or false")),
    };
    if model["byte_fallback"] == true {
        return Err("model.byte_fallback is not supported".into());
    }
    let decoder = &json["decoder"];
    if !decoder.is_null() && decoder["type"] != "ByteLevel" {
        return Err(format!(
            "unsupported decoder {}: expected ByteLevel",
            show_json(decoder)
        ));
    }
    hf_plain_added_tokens(&json["added_tokens"])?;
    Ok((pattern, ignore_merges))
}

/// Check that each of the 256 bytes has a token of its own: the fast path
/// starts every word from its bytes. A vocabulary trained without the full
/// initial alphabet (Hugging Face's `BpeTrainer` without
/// `initial_alphabet=ByteLevel.alphabet()`) lacks the bytes its training
/// text never held; `tokenizers` drops such bytes, and runs the file.
fn hf_full_byte_alphabet(tokens: &[Vec<u8>]) -> Result<(), String> {
    let mut present = [false; 256];
    for token in tokens.iter().filter(|t| t.len() == 1) {
        present[token[0] as usize] = true;
    }
    match (0..=255u8).find(|&b| !present[b as usize]) {
        Some(b) => Err(format!(
            "byte 0x{b:02x} has no token (a vocabulary trained without the full 256-byte alphabet)"
        )),
        None => Ok(()),
    }
}

/// Check that every added token is special and matched as written: a token
/// with `"special": false` or `lstrip`, `rstrip`, `single_word` set is not
/// supported (absent flags take these defaults).
fn hf_plain_added_tokens(added: &Value) -> Result<(), String> {
    let Some(list) = added.as_array() else {
        return Ok(());
    };
    for (i, token) in list.iter().enumerate() {
        if token["special"] == false {
            return Err(format!(
                "added_tokens[{i}] is not special: added tokens that are not special are not supported"
            ));
        }
        for flag in ["lstrip", "rstrip", "single_word"] {
            if token[flag] == true {
                return Err(format!("added_tokens[{i}].{flag} is not supported"));
            }
        }
    }
    Ok(())
}

/// The pattern of a Hugging Face pre-tokenizer, if it is one we implement.
fn hf_pattern(pre: &Value) -> Option<Pattern> {
    // A flag that is absent takes its default; one of another type is refused.
    let flag = |v: &Value, default: bool| match v {
        Value::Null => Some(default),
        v => v.as_bool(),
    };
    let byte_level = |p: &Value, regex: bool| {
        p["type"] == "ByteLevel"
            && flag(&p["add_prefix_space"], false) == Some(false)
            && flag(&p["use_regex"], true) == Some(regex)
    };
    if byte_level(pre, true) {
        return Some(Pattern::Gpt2);
    }
    let steps = pre["pretokenizers"].as_array()?;
    match &steps[..] {
        [split, last]
            if pre["type"] == "Sequence"
                && split["type"] == "Split"
                && split["behavior"] == "Isolated"
                && split["invert"] == false
                && byte_level(last, false) =>
        {
            Pattern::from_regex(split["pattern"]["Regex"].as_str()?)
        }
        _ => None,
    }
}

/// `model.vocab`, an object of token string → id, in the file's order.
pub(super) fn read_vocab(model: &Value) -> Result<Vec<(&str, u32)>, String> {
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| expected("model.vocab", &model["vocab"], "an object of token → id"))?;
    vocab
        .iter()
        .map(|(s, id)| {
            let id = json_id(id).map_err(|e| format!("vocabulary entry {}: {e}", show_str(s)))?;
            Ok((s.as_str(), id))
        })
        .collect()
}

/// `added_tokens` (absent, or a list of `{"content", "id"}`): the special tokens.
fn hf_added_tokens(added: &Value) -> Result<Vec<(String, u32)>, String> {
    let list = match added {
        Value::Null => return Ok(Vec::new()),
        Value::Array(list) => list,
        other => return Err(expected("added_tokens", other, "a list")),
    };
    let read = |(i, token): (usize, &Value)| {
        let content = &token["content"];
        let content = content.as_str().filter(|c| !c.is_empty()).ok_or_else(|| {
            expected(
                &format!("added_tokens[{i}].content"),
                content,
                "a non-empty string",
            )
        })?;
        let id = json_id(&token["id"])
            .map_err(|e| format!("added token {i} ({}): {e}", show_str(content)))?;
        Ok((content.to_string(), id))
    };
    list.iter().enumerate().map(read).collect()
}

/// The vocabulary's bytes by id, its ids unique and dense with the added tokens'.
fn hf_lay_out(vocab: &[(&str, u32)], specials: &[(String, u32)]) -> Result<Vec<Vec<u8>>, String> {
    // Ids that only an added token has stay empty here, for `with_tokens` to fill.
    check_unique(vocab)?;
    let ids: Vec<u32> = vocab
        .iter()
        .map(|e| e.1)
        .chain(specials.iter().map(|e| e.1))
        .collect();
    let n = check_dense(&ids, |i| match vocab.get(i) {
        Some((s, _)) => format!("vocabulary entry {}", show_str(s)),
        None => {
            let k = i - vocab.len();
            format!("added token {k} ({})", show_str(&specials[k].0))
        }
    })?;
    let char_to_byte: FxHashMap<char, u8> = byte_to_char().into_iter().zip(0..=255u8).collect();
    let mut tokens = vec![Vec::new(); n];
    for &(s, id) in vocab {
        let bytes: Option<Vec<u8>> = s.chars().map(|c| char_to_byte.get(&c).copied()).collect();
        tokens[id as usize] = match bytes {
            Some(bytes) if !bytes.is_empty() => bytes,
            Some(_) => return Err("vocabulary entry \"\" is empty".into()),
            None => {
                return Err(format!(
                    "vocabulary entry {} is not in the byte-level alphabet",
                    show_str(s)
                ));
            }
        };
    }
    Ok(tokens)
}

/// `model.merges`, each `"a b"` or `["a", "b"]`, as pairs of vocabulary ids.
fn hf_merges(merges: &Value, vocab: &[(&str, u32)]) -> Result<Vec<(u32, u32)>, String> {
    let list = merges
        .as_array()
        .ok_or_else(|| expected("model.merges", merges, "a list of merges"))?;
    let by_string: FxHashMap<&str, u32> = vocab.iter().copied().collect();
    let read = |(i, m): (usize, &Value)| {
        let (a, b) = merge_pair(m).ok_or_else(|| {
            format!(
                "merge {i} is {}, expected \"a b\" or [\"a\", \"b\"]",
                show_json(m)
            )
        })?;
        let id = |s: &str| {
            by_string.get(s).copied().ok_or_else(|| {
                format!(
                    "merge {i} ({}) names {}, which is not in the vocabulary",
                    show_json(m),
                    show_str(s)
                )
            })
        };
        Ok((id(a)?, id(b)?))
    };
    list.iter().enumerate().map(read).collect()
}

/// The two token strings of a merge written `"a b"` or `["a", "b"]`.
pub(super) fn merge_pair(m: &Value) -> Option<(&str, &str)> {
    match m {
        Value::String(s) => s.split_once(' '),
        Value::Array(pair) => match &pair[..] {
            [Value::String(a), Value::String(b)] => Some((a, b)),
            _ => None,
        },
        _ => None,
    }
}

/// A token id read from a file: an integer from 0 to `u32::MAX`, or what is
/// wrong with it.
fn json_id(value: &Value) -> Result<u32, String> {
    let problem = match value {
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(id), _, _) => match u32::try_from(id) {
                Ok(id) => return Ok(id),
                Err(_) => format!("id {id} is too large"),
            },
            (None, Some(id), _) => format!("id {id} is negative"),
            // Integers beyond i64/u64 are parsed as floats.
            (None, None, Some(f)) if f.fract() == 0.0 && f.abs() >= 9e18 => {
                format!(
                    "id {n} is {}",
                    if f < 0.0 { "negative" } else { "too large" }
                )
            }
            _ => format!("id {n} is not an integer"),
        },
        Value::Null => "the id is missing".into(),
        other => format!("id {} is not a number", show_json(other)),
    };
    Err(format!(
        "{problem}; token ids are integers from 0 to {}",
        u32::MAX
    ))
}

/// Check that no two vocabulary entries share an id.
pub(super) fn check_unique(vocab: &[(&str, u32)]) -> Result<(), String> {
    let mut owner: FxHashMap<u32, &str> = FxHashMap::default();
    for &(s, id) in vocab {
        if let Some(other) = owner.insert(id, s) {
            return Err(format!(
                "vocabulary entries {} and {} both have id {id}; each token needs its own id",
                show_str(other),
                show_str(s)
            ));
        }
    }
    Ok(())
}

/// Check that `ids` (repeats allowed) are 0..N with no gap, N being the number
/// of distinct ids, and return N; else name the entry (`name(i)` for `ids[i]`)
/// that is out of range and the first id missing.
pub(super) fn check_dense(ids: &[u32], name: impl Fn(usize) -> String) -> Result<usize, String> {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let n = sorted.len();
    let Some(i) = ids.iter().position(|&id| id as usize >= n) else {
        return Ok(n);
    };
    // `n` distinct ids, one of them `n` or more: some id below `n` is missing.
    let missing = (0u32..)
        .zip(&sorted)
        .find(|&(k, &id)| k != id)
        .map_or(0, |(k, _)| k);
    Err(format!(
        "{} has id {}, out of range: the file has {n} distinct ids, so they must run \
         from 0 to {} with no gap, and id {missing} is missing",
        name(i),
        ids[i],
        n - 1
    ))
}

/// "`field` is `value`, expected `what`", for a field of the wrong type.
pub(super) fn expected(field: &str, value: &Value, what: &str) -> String {
    match value {
        Value::Null => format!("{field} is missing or null, expected {what}"),
        value => format!("{field} is {}, expected {what}", show_json(value)),
    }
}

/// A string from a file, quoted, cut short if long (errors stay readable).
pub(super) fn show_str(s: &str) -> String {
    cut_short(format!("{s:?}"))
}

/// A JSON value from a file, cut short if long.
pub(super) fn show_json(value: &Value) -> String {
    cut_short(value.to_string())
}

/// Token bytes as a quoted string, cut short if long.
fn show_bytes(bytes: &[u8]) -> String {
    show_str(&String::from_utf8_lossy(bytes))
}

fn cut_short(mut text: String) -> String {
    const MAX: usize = 80;
    if text.len() > MAX {
        let end = (0..=MAX)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        text.truncate(end);
        text.push('…');
    }
    text
}

/// Merge results of the distinct pieces seen during one `encode` call.
#[derive(Default)]
struct PieceCache<'t> {
    pieces: FxHashMap<&'t str, (u32, u32)>,
    arena: Vec<u32>,
    parts: Vec<u32>,
    ranks: Vec<(u32, u32)>,
}

impl PieceCache<'_> {
    /// Stop caching past this many ids (16 MB), to bound memory on huge texts.
    const MAX_ARENA: usize = 4 << 20;
}

impl Tokenizer for BpeTokenizer {
    /// Byte-level BPE can express any text, so this never fails. Special
    /// tokens in the text are recognised (as Hugging Face does); use
    /// [`BpeTokenizer::encode_ordinary`] to treat them as plain text.
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self.encode_with_special(text))
    }

    fn encode_parallel(&self, text: &str, chunks: usize) -> Result<Vec<u32>> {
        Ok(BpeTokenizer::encode_parallel(self, text, chunks))
    }

    fn decode_bytes(&self, ids: &[u32]) -> Vec<u8> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            match self.tokens.get(id as usize) {
                Some(t) => out.extend_from_slice(t),
                None => out.extend_from_slice(char::REPLACEMENT_CHARACTER.to_string().as_bytes()),
            }
        }
        out
    }

    fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    fn kind(&self) -> &'static str {
        self.kind
    }

    fn eot_token(&self) -> Option<u32> {
        self.special_id("<|endoftext|>")
    }

    fn with_specials(&self, names: &[&str]) -> Result<Box<dyn Tokenizer>> {
        Ok(Box::new(self.with_added_specials(names)?))
    }

    fn special_token(&self, content: &str) -> Option<u32> {
        self.special_id(content)
    }

    fn encode_ordinary(&self, text: &str) -> Result<Vec<u32>> {
        Ok(BpeTokenizer::encode_ordinary(self, text))
    }

    fn save(&self, path: &Path) -> Result<()> {
        let json = self.to_hf_json()?;
        let bytes = serde_json::to_vec_pretty(&json).expect("JSON values always serialise");
        crate::fsutil::write_atomic_bytes(path, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_is_a_bijection_onto_printable_chars() {
        let table = byte_to_char();
        let set: std::collections::HashSet<char> = table.iter().copied().collect();
        assert_eq!(set.len(), 256);
        assert_eq!(table[b' ' as usize], 'Ġ');
        assert_eq!(table[b'\n' as usize], 'Ċ');
        assert_eq!(table[b'A' as usize], 'A');
    }

    #[test]
    fn gpt2_known_ids() {
        let tok = gpt2().unwrap();
        assert_eq!(tok.vocab_size(), 50257);
        assert_eq!(tok.encode_ordinary("Hello world"), [15496, 995]);
        assert_eq!(
            tok.encode("hi<|endoftext|>there").unwrap(),
            [5303, 50256, 8117]
        );
        assert_ne!(tok.encode_ordinary("<|endoftext|>"), [50256]);
        assert_eq!(tok.decode(&[15496, 995, 50256]), "Hello world<|endoftext|>");
    }

    #[test]
    fn heap_merge_equals_the_simple_merge() {
        let tok = gpt2().unwrap();
        let mut rng = crate::rng::Rng::new(7, 0);
        let alphabet = b"aaaabbbcde  \n'!1";
        let (mut scratch, mut checked) = (Vec::new(), 0);
        for len in (2..400).step_by(7) {
            let bytes: Vec<u32> = (0..len)
                .map(|_| tok.byte_ids[alphabet[rng.below(alphabet.len() as u64) as usize] as usize])
                .collect();
            let (mut simple, mut heap) = (bytes.clone(), bytes);
            tok.merge(&mut simple, &mut scratch, NO_MERGE);
            tok.merge_long(&mut heap);
            assert_eq!(heap, simple, "length {len}");
            checked += (simple.len() < len) as usize;
        }
        assert!(checked > 50, "the random pieces do merge");
    }

    #[test]
    fn parallel_encoding_equals_serial() {
        let tok = gpt2().unwrap();
        let text = "First line.\nSecond  line\n\n  third<|endoftext|>x\ny \n z\n".repeat(50);
        let serial = tok.encode_with_special(&text);
        for chunks in [2, 3, 7, 64] {
            assert_eq!(
                tok.encode_parallel(&text, chunks),
                serial,
                "{chunks} chunks"
            );
        }
        assert!(
            super::super::pretokenize::safe_cuts(&text, 7).len() > 3,
            "the text has cut points"
        );
    }

    #[test]
    fn merge_list_of_gpt2_starts_like_its_vocab_bpe() {
        // GPT-2's vocab.bpe begins "Ġ t", "Ġ a", "h e", "i n", "r e", "o n".
        let tok = gpt2().unwrap();
        let table = byte_to_char();
        let merges = tok.merge_list().unwrap();
        assert_eq!(merges.len(), 50000);
        let first: Vec<String> = merges[..6]
            .iter()
            .map(|&(a, b)| {
                format!(
                    "{} {}",
                    bytes_to_unicode(&tok.tokens[a as usize], &table),
                    bytes_to_unicode(&tok.tokens[b as usize], &table)
                )
            })
            .collect();
        assert_eq!(first, ["Ġ t", "Ġ a", "h e", "i n", "r e", "o n"]);
    }
}
