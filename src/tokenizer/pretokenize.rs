//! Pre-tokenization: cut text into "words" before byte-pair merging, so that a
//! merge never crosses a word boundary.
//!
//! GPT-2 and GPT-4 define the cut with a regular expression, matched leftmost
//! first over and over:
//!
//! ```text
//! GPT-2 ('gpt2'):  's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//! GPT-4 ('gpt4', tiktoken's cl100k_base):
//!   '(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+
//! ```
//!
//! Both need backtracking (`(?!\S)`), which makes a regex engine slow. Here each
//! pattern is a hand-written state machine over characters that looks at the
//! class of the current and next character (letter `\p{L}`, number `\p{N}`,
//! white space `\s`, or other) and returns where the piece ends. The subtle rule
//! is `\s+(?!\S)`: a run of white space followed by a non-space gives back its
//! last character, so that `"a   b"` splits as `a`, `"  "`, `" b"` (the last
//! space joins the word). A run of one white-space character before a
//! non-space is matched by the final `\s+` on its own.
//!
//! The character classes come from `regex-syntax`'s Unicode tables, the same
//! tables the regex engine inside tiktoken uses. The tests check both machines
//! against `fancy-regex` running the patterns above on random and adversarial text.

use std::sync::OnceLock;

/// The pre-tokenization split pattern of a byte-level BPE tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// GPT-2's split (tiktoken `gpt2`/`r50k_base`, Hugging Face `ByteLevel` with `use_regex`).
    Gpt2,
    /// GPT-4's split (tiktoken `cl100k_base`): case-insensitive contractions,
    /// numbers in groups of at most three digits, newlines kept apart.
    Gpt4,
}

impl Pattern {
    /// The regular expression this pattern implements, as tiktoken and Hugging Face write it.
    pub fn regex(self) -> &'static str {
        match self {
            Pattern::Gpt2 => GPT2_REGEX,
            Pattern::Gpt4 => GPT4_REGEX,
        }
    }

    /// `gpt2` or `gpt4`.
    pub fn name(self) -> &'static str {
        match self {
            Pattern::Gpt2 => "gpt2",
            Pattern::Gpt4 => "gpt4",
        }
    }

    /// Parse `gpt2` or `gpt4` (alias `cl100k`).
    pub fn from_name(name: &str) -> Option<Pattern> {
        match name {
            "gpt2" => Some(Pattern::Gpt2),
            "gpt4" | "cl100k" => Some(Pattern::Gpt4),
            _ => None,
        }
    }

    /// The pattern whose regex is exactly `regex`, if it is one of ours.
    pub fn from_regex(regex: &str) -> Option<Pattern> {
        [Pattern::Gpt2, Pattern::Gpt4]
            .into_iter()
            .find(|p| p.regex() == regex)
    }

    /// Split `text` into pieces; concatenated, they give back `text`.
    pub fn split(self, text: &str) -> Pieces<'_> {
        Pieces {
            text,
            pos: 0,
            pattern: self,
            classes: classes(),
        }
    }
}

pub const GPT2_REGEX: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
pub const GPT4_REGEX: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";

/// Iterator over the pieces of a text (see [`Pattern::split`]).
pub struct Pieces<'a> {
    text: &'a str,
    pos: usize,
    pattern: Pattern,
    classes: &'static Classes,
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.pos >= self.text.len() {
            return None;
        }
        let cursor = Cursor {
            text: self.text,
            classes: self.classes,
        };
        let end = match self.pattern {
            Pattern::Gpt2 => cursor.gpt2_piece_end(self.pos),
            Pattern::Gpt4 => cursor.gpt4_piece_end(self.pos),
        };
        let piece = &self.text[self.pos..end];
        self.pos = end;
        Some(piece)
    }
}

/// Character classes of the patterns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Class {
    Other = 0,
    Letter = 1,
    Number = 2,
    Space = 3,
}

/// Class of every Unicode scalar value, one byte each (1.1 MB, built once).
struct Classes {
    table: Box<[Class]>,
}

fn classes() -> &'static Classes {
    static CLASSES: OnceLock<Classes> = OnceLock::new();
    CLASSES.get_or_init(|| {
        let mut table = vec![Class::Other; char::MAX as usize + 1].into_boxed_slice();
        for (regex, class) in [
            (r"\p{L}", Class::Letter),
            (r"\p{N}", Class::Number),
            (r"\s", Class::Space),
        ] {
            for (lo, hi) in unicode_ranges(regex) {
                table[lo as usize..=hi as usize].fill(class);
            }
        }
        Classes { table }
    })
}

/// The ranges of a Unicode class, from the regex engine's own tables.
fn unicode_ranges(class: &str) -> Vec<(char, char)> {
    use regex_syntax::hir::{Class as HirClass, HirKind};
    let hir = regex_syntax::parse(class).expect("the class regexes are valid");
    match hir.kind() {
        HirKind::Class(HirClass::Unicode(c)) => {
            c.ranges().iter().map(|r| (r.start(), r.end())).collect()
        }
        other => unreachable!("{class} parsed to {other:?}"),
    }
}

/// Reads characters and their classes at byte offsets of a text.
#[derive(Clone, Copy)]
struct Cursor<'a> {
    text: &'a str,
    classes: &'static Classes,
}

impl Cursor<'_> {
    /// The character at byte offset `i` (a char boundary), if any.
    #[inline]
    fn char_at(&self, i: usize) -> Option<char> {
        let bytes = self.text.as_bytes();
        match bytes.get(i) {
            None => None,
            Some(&b) if b < 0x80 => Some(b as char),
            Some(_) => self.text[i..].chars().next(),
        }
    }

    #[inline]
    fn class(&self, c: char) -> Class {
        self.classes.table[c as usize]
    }

    /// The class of the character at `i`, `None` at the end of the text.
    #[inline]
    fn class_at(&self, i: usize) -> Option<Class> {
        self.char_at(i).map(|c| self.class(c))
    }

    /// The end of the run of characters of class `class` starting at `i`.
    #[inline]
    fn run_end(&self, mut i: usize, class: Class) -> usize {
        while let Some(c) = self.char_at(i) {
            if self.class(c) != class {
                break;
            }
            i += c.len_utf8();
        }
        i
    }

    /// End of the characters in `\r\n` starting at `i`.
    fn newlines_end(&self, mut i: usize) -> usize {
        let bytes = self.text.as_bytes();
        while i < bytes.len() && (bytes[i] == b'\r' || bytes[i] == b'\n') {
            i += 1;
        }
        i
    }

    /// `\s+(?!\S)|\s+` at `i` (a white-space character): the whole run if it
    /// reaches the end of the text, else the run less its last character, else
    /// (a run of one before a non-space) that one character.
    fn space_run_end(&self, i: usize) -> usize {
        let mut end = i;
        let mut last_start = i;
        while let Some(c) = self.char_at(end) {
            if self.class(c) != Class::Space {
                break;
            }
            last_start = end;
            end += c.len_utf8();
        }
        if end == self.text.len() || last_start == i {
            end
        } else {
            last_start
        }
    }

    fn gpt2_piece_end(&self, i: usize) -> usize {
        let c = self.char_at(i).expect("called inside the text");
        let j = i + c.len_utf8();
        if c == '\'' {
            let rest = &self.text.as_bytes()[j..];
            match rest {
                [b's' | b't' | b'm' | b'd', ..] => return j + 1,
                [b'r', b'e', ..] | [b'v', b'e', ..] | [b'l', b'l', ..] => return j + 2,
                _ => {}
            }
        }
        match self.class(c) {
            class @ (Class::Letter | Class::Number | Class::Other) => self.run_end(j, class),
            Class::Space => {
                // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+` take a leading space.
                if c == ' '
                    && let Some(next) = self.char_at(j)
                {
                    let class = self.class(next);
                    if class != Class::Space {
                        return self.run_end(j + next.len_utf8(), class);
                    }
                }
                self.space_run_end(i)
            }
        }
    }

    fn gpt4_piece_end(&self, i: usize) -> usize {
        let c = self.char_at(i).expect("called inside the text");
        let j = i + c.len_utf8();
        if c == '\''
            && let Some(n) = self.gpt4_contraction(j)
        {
            return j + n;
        }
        let class = self.class(c);
        // `[^\r\n\p{L}\p{N}]?+\p{L}+`: one optional non-letter, non-number,
        // non-newline prefix, then letters.
        if class == Class::Letter {
            return self.run_end(j, Class::Letter);
        }
        if class != Class::Number
            && c != '\r'
            && c != '\n'
            && let Some(next) = self.char_at(j)
            && self.class(next) == Class::Letter
        {
            return self.run_end(j + next.len_utf8(), Class::Letter);
        }
        match class {
            Class::Letter => unreachable!("handled above"),
            // `\p{N}{1,3}`
            Class::Number => {
                let mut end = j;
                for _ in 0..2 {
                    match self.char_at(end) {
                        Some(d) if self.class(d) == Class::Number => end += d.len_utf8(),
                        _ => break,
                    }
                }
                end
            }
            // ` ?[^\s\p{L}\p{N}]++[\r\n]*`
            Class::Other => self.newlines_end(self.run_end(j, Class::Other)),
            Class::Space => {
                if c == ' ' && self.class_at(j) == Some(Class::Other) {
                    return self.newlines_end(self.run_end(j, Class::Other));
                }
                // `\s*[\r\n]`: the longest white-space prefix ending in a newline.
                let mut end = i;
                let mut after_newline = None;
                while let Some(d) = self.char_at(end) {
                    if self.class(d) != Class::Space {
                        break;
                    }
                    end += d.len_utf8();
                    if d == '\r' || d == '\n' {
                        after_newline = Some(end);
                    }
                }
                after_newline.unwrap_or_else(|| self.space_run_end(i))
            }
        }
    }

    /// `(?i:[sdmt]|ll|ve|re)` at `j`: its length in bytes. Case-insensitive
    /// matching uses Unicode simple case folding, so `ſ` (long s) counts as `s`.
    fn gpt4_contraction(&self, j: usize) -> Option<usize> {
        let c = self.char_at(j)?;
        match c.to_ascii_lowercase() {
            's' | 'd' | 'm' | 't' => return Some(1),
            'ſ' => return Some(c.len_utf8()),
            _ => {}
        }
        let d = self.char_at(j + c.len_utf8())?.to_ascii_lowercase();
        match (c.to_ascii_lowercase(), d) {
            ('l', 'l') | ('v', 'e') | ('r', 'e') => Some(2),
            _ => None,
        }
    }
}

/// Byte offsets `0 = c_0 < c_1 < … < c_k = len` cutting `text` into about
/// `chunks` parts, each cut just after a `\n` between two non-white-space
/// characters: no piece of either pattern spans such a cut, and the piece
/// that ends with the newline is the same whether the text goes on or ends there.
pub(crate) fn safe_cuts(text: &str, chunks: usize) -> Vec<usize> {
    let bytes = text.as_bytes();
    let mut cuts = vec![0];
    for k in 1..chunks {
        let target = (text.len() * k / chunks).max(*cuts.last().expect("starts with 0"));
        let found = memchr_newlines(&bytes[target..]).map(|p| p + target).find(|&p| {
            let before = text[..p].chars().next_back();
            let after = text[p + 1..].chars().next();
            matches!((before, after), (Some(b), Some(a)) if !b.is_whitespace() && !a.is_whitespace())
        });
        match found {
            Some(p) if p + 1 > *cuts.last().expect("starts with 0") => cuts.push(p + 1),
            Some(_) => {}
            None => break,
        }
    }
    cuts.push(text.len());
    cuts
}

fn memchr_newlines(bytes: &[u8]) -> impl Iterator<Item = usize> + '_ {
    bytes
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'\n')
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The slow, obviously-correct twin: the regex itself.
    fn regex_split(pattern: Pattern, text: &str) -> Vec<String> {
        let re = fancy_regex::Regex::new(pattern.regex()).unwrap();
        re.find_iter(text)
            .map(|m| m.unwrap().as_str().to_string())
            .collect()
    }

    fn split(pattern: Pattern, text: &str) -> Vec<String> {
        pattern.split(text).map(str::to_string).collect()
    }

    const ADVERSARIAL: &[&str] = &[
        "Hello world",
        "a   b",
        "a \t\n b\n\n\nc  ",
        "trailing   ",
        "\n\n  \n",
        " leading",
        "DON'T it's we'll I'M they'Re 'll 'S x'sy ''s",
        "'ſ 'ſt 'LL 'Ve",
        "12345 6789 1,000,000.50 ٣٤٥ Ⅻ ½",
        "emoji 🎉🎉 👩‍👩‍👧 ok",
        "中文字符 日本語のテキスト 한국어",
        "مرحبا بالعالم",
        "e\u{301}a\u{308} combining \u{301}\u{301}",
        "  !!!\n\n?? ...\r\n\r\nx",
        "\u{3000}\u{a0}x\u{2028}y \u{85}z",
        "tabs\t\tand\t spaces \t",
        "<|endoftext|>hello<|endoftext|>",
        "",
    ];

    #[test]
    fn both_patterns_match_the_regex_on_adversarial_text() {
        for pattern in [Pattern::Gpt2, Pattern::Gpt4] {
            for text in ADVERSARIAL {
                assert_eq!(
                    split(pattern, text),
                    regex_split(pattern, text),
                    "{pattern:?} on {text:?}"
                );
            }
        }
    }

    #[test]
    fn space_before_a_word_joins_it() {
        assert_eq!(split(Pattern::Gpt2, "a   b"), ["a", "  ", " b"]);
        assert_eq!(split(Pattern::Gpt2, "a \n"), ["a", " \n"]);
        assert_eq!(split(Pattern::Gpt4, "1234567"), ["123", "456", "7"]);
    }

    /// Text drawn from characters of every class, weighted towards the ones
    /// the patterns treat specially.
    fn tricky_text() -> impl Strategy<Value = String> {
        let chars = prop_oneof![
            Just(' '),
            Just('\n'),
            Just('\r'),
            Just('\t'),
            Just('\''),
            Just('\u{a0}'),
            Just('\u{3000}'),
            prop::sample::select(vec!['s', 'S', 'l', 'L', 'v', 'e', 'r', 'd', 'm', 't', 'ſ']),
            prop::sample::select(vec![
                'a', 'é', '中', '1', '٣', '½', '!', '.', '🎉', '\u{301}'
            ]),
            any::<char>(),
        ];
        prop::collection::vec(chars, 0..40).prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn gpt2_machine_equals_regex(text in tricky_text()) {
            prop_assert_eq!(split(Pattern::Gpt2, &text), regex_split(Pattern::Gpt2, &text));
        }

        #[test]
        fn gpt4_machine_equals_regex(text in tricky_text()) {
            prop_assert_eq!(split(Pattern::Gpt4, &text), regex_split(Pattern::Gpt4, &text));
        }
    }
}
