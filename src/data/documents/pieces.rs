//! Cutting a document into pieces of at most a given size, and normalising
//! each piece.
//!
//! Where a piece ends, in order of preference, within its window of the size
//! limit:
//!
//! 1. after the last newline between two non-white-space characters: no
//!    pre-tokenizer piece of GPT-2's or GPT-4's pattern spans such a newline
//!    (the tokenizer's own `safe_cuts` uses the same rule), so encoding the
//!    pieces one by one gives exactly the ids of the whole text;
//! 2. else after the last newline followed by a non-white-space character
//!    (text whose lines are all separated by blank lines has no place of the
//!    first kind): GPT-4's pattern splits there too, so its ids are those of
//!    the whole text; GPT-2's splits one character earlier, so it may encode
//!    the white space before the cut differently (`\n\n` ending a piece is
//!    one token, two in the whole text);
//! 3. else hard at the size limit, moved back to the start of a UTF-8
//!    character (and before the `\r` of a CRLF, which is never split); ids
//!    next to a hard cut may differ from those of the whole text.
//!
//! The search is linear: [`Cutter`] remembers how far it has looked (what it
//! has looked at holds no place of the first kind, and it keeps the last
//! place of the second kind), so no byte is searched twice.

/// Bytes after a newline that may be needed to decode the character that
/// follows it (the longest UTF-8 character).
const LOOKAHEAD: usize = 4;

/// Finds where the next piece of a document ends.
#[derive(Debug, Clone)]
pub struct Cutter {
    max: usize,
    /// `rest[..scanned]` has been searched and holds no place of the first kind.
    scanned: usize,
    /// The last place of the second kind in `rest[..scanned]` (a piece length).
    near: Option<usize>,
}

impl Cutter {
    /// Pieces of at most `max` bytes (at least 8, so that a hard cut moved
    /// back to a character boundary is never empty).
    pub fn new(max: usize) -> Self {
        assert!(max >= 8, "pieces of at least 8 bytes");
        Cutter {
            max,
            scanned: 0,
            near: None,
        }
    }

    /// How many bytes of the document `cut` wants to see (fewer only at its end).
    pub fn wanted(&self) -> usize {
        self.max + LOOKAHEAD
    }

    /// The length of the next piece of `rest`, the document's bytes not yet
    /// handed on: all of them if `end`, else at least [`Cutter::wanted`]. The
    /// caller then drops that many bytes from the front of `rest`.
    pub fn cut(&mut self, rest: &[u8], end: bool) -> usize {
        if end && rest.len() <= self.max {
            (self.scanned, self.near) = (0, None);
            return rest.len();
        }
        debug_assert!(rest.len() > self.max, "cut needs a full window");
        // A newline at `i` gives a piece of `i + 1` bytes; search the window's
        // new part from its end.
        let (lo, mut hi) = (self.scanned.min(self.max), self.max);
        let mut near_here = None;
        let exact = loop {
            let Some(j) = rest[lo..hi].iter().rposition(|&b| b == b'\n') else {
                break None;
            };
            let i = lo + j;
            if text_follows(rest, i) {
                if text_precedes(rest, i) {
                    break Some(i + 1);
                }
                near_here = near_here.or(Some(i + 1));
            }
            hi = i;
        };
        let cut = exact
            .or(near_here)
            .or(self.near)
            .unwrap_or_else(|| hard_cut(rest, self.max));
        // `rest[cut..max]` has been searched: no place of the first kind, and
        // of the second kind at most one found after an exact cut.
        self.scanned = self.max - cut;
        self.near = match exact {
            Some(_) => near_here.map(|n| n - cut),
            None => None,
        };
        cut
    }
}

/// Is a non-white-space character right after the newline at `rest[i]`?
/// (Never for `i == 0`: a piece of a lone newline is no place to cut.)
fn text_follows(rest: &[u8], i: usize) -> bool {
    let after = rest.get(i + 1).and_then(|&lead| {
        let width = utf8_width(lead)?;
        let bytes = rest.get(i + 1..i + 1 + width)?;
        std::str::from_utf8(bytes).ok()?.chars().next()
    });
    i > 0 && after.is_some_and(|c| !c.is_whitespace())
}

/// Is a non-white-space character right before the newline at `rest[i]`?
/// (At `i == 0` it is in the previous piece: not known, so no.)
fn text_precedes(rest: &[u8], i: usize) -> bool {
    if i == 0 {
        return false;
    }
    let start = (i.saturating_sub(LOOKAHEAD)..i)
        .rev()
        .find(|&k| !is_continuation(rest[k]))
        .unwrap_or(i - 1);
    std::str::from_utf8(&rest[start..i])
        .ok()
        .and_then(|s| s.chars().next_back())
        .is_some_and(|c| !c.is_whitespace())
}

/// The piece length for a window with no newline to cut after: `max`, moved
/// back to the start of a character and off the middle of a CRLF.
fn hard_cut(rest: &[u8], max: usize) -> usize {
    let mut cut = max;
    // Valid UTF-8 has at most three continuation bytes in a row; invalid text
    // is reported by the UTF-8 check of the piece, wherever it is cut.
    for _ in 0..LOOKAHEAD - 1 {
        if is_continuation(rest[cut]) {
            cut -= 1;
        }
    }
    if rest[cut] == b'\n' && rest[cut - 1] == b'\r' {
        cut -= 1;
    }
    cut
}

fn is_continuation(b: u8) -> bool {
    b & 0xc0 == 0x80
}

/// The length of the UTF-8 character starting with `lead`, if it can start one.
fn utf8_width(lead: u8) -> Option<usize> {
    match lead {
        0x00..=0x7f => Some(1),
        0xc2..=0xdf => Some(2),
        0xe0..=0xef => Some(3),
        0xf0..=0xf4 => Some(4),
        _ => None,
    }
}

/// Cut an in-memory text into pieces of at most `max` bytes by the rule above.
pub fn split_text(text: &str, max: usize) -> impl Iterator<Item = &str> {
    let mut cutter = Cutter::new(max);
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let cut = cutter.cut(rest.as_bytes(), true);
        // Cuts fall after a newline or at a character start: always a boundary.
        let (piece, tail) = rest.split_at(cut);
        rest = tail;
        Some(piece)
    })
}

/// Where in `text` a validation tail that should start at byte `from`
/// starts: after the first newline at or past `from` that is followed by a
/// non-white-space character (so the tail starts a line), else at the first
/// character boundary at or past `from` (a text without such a newline is
/// cut there). At most `text.len()`.
pub fn tail_cut(text: &str, from: usize) -> usize {
    let bytes = text.as_bytes();
    let from = from.min(bytes.len());
    let line = (from.max(1)..bytes.len())
        .find(|&i| bytes[i - 1] == b'\n' && !bytes[i].is_ascii_whitespace());
    line.unwrap_or_else(|| {
        (from..=bytes.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(bytes.len())
    })
}

/// Normalise one piece: remove a byte-order mark at the start of a document
/// (`document_start`), and turn CRLF into LF.
pub fn normalize_piece(mut text: String, document_start: bool) -> String {
    if document_start && text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    if text.contains("\r\n") {
        text.replace("\r\n", "\n")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pieces(text: &str, max: usize) -> Vec<&str> {
        split_text(text, max).collect()
    }

    #[test]
    fn cuts_after_the_last_newline_between_non_space_characters() {
        assert_eq!(pieces("ab\ncd\nef\ngh", 8), ["ab\ncd\n", "ef\ngh"]);
        // Only "\n\n" + text: cut after the last one.
        assert_eq!(pieces("ab\n\ncd\n\nef", 8), ["ab\n\ncd\n\n", "ef"]);
        // An exact place wins over a later near one.
        assert_eq!(pieces("a\nb \ncdefg", 8), ["a\n", "b \ncdefg"]);
        // "\n " is no place to cut at all: hard cut at 8.
        assert_eq!(pieces("ab\n cd\n efgh", 8), ["ab\n cd\n ", "efgh"]);
        assert_eq!(pieces("abcdefghij", 8), ["abcdefgh", "ij"]);
        assert_eq!(pieces("short", 8), ["short"]);
    }

    #[test]
    fn hard_cuts_keep_characters_and_crlf_whole() {
        // 'é' is 2 bytes at 7..9: the cut moves back to 7.
        assert_eq!(pieces("abcdefgé", 8), ["abcdefg", "é"]);
        // '🎉' is 4 bytes at 5..9.
        assert_eq!(pieces("abcde🎉xyz", 8), ["abcde", "🎉xyz"]);
        assert_eq!(pieces("abcdefg\r\nxy", 8), ["abcdefg", "\r\nxy"]);
    }

    #[test]
    fn normalisation_removes_a_leading_bom_and_crlf() {
        assert_eq!(normalize_piece("\u{feff}a\r\nb\r\n".into(), true), "a\nb\n");
        assert_eq!(normalize_piece("\u{feff}a".into(), false), "\u{feff}a");
        assert_eq!(normalize_piece("a\rb".into(), true), "a\rb");
    }

    proptest! {
        /// Pieces join back to the text, are at most `max` bytes, and end
        /// where a naive search of each window says.
        #[test]
        fn pieces_join_back_and_respect_the_bound(
            text in "([a-c é🎉\n\r\t]){0,200}",
            max in 8usize..40,
        ) {
            let got = pieces(&text, max);
            prop_assert_eq!(got.concat(), text.clone());
            for (k, p) in got.iter().enumerate() {
                prop_assert!(!p.is_empty() && p.len() <= max);
                let last = k + 1 == got.len();
                prop_assert!(last || !(p.ends_with('\r') && got[k + 1].starts_with('\n')));
            }
            // Against a naive search of every window.
            let mut start = 0;
            for p in &got {
                let rest = &text.as_bytes()[start..];
                if rest.len() > max {
                    let newline = |i: usize| rest[i] == b'\n' && text_follows(rest, i);
                    let exact = (0..max).rev().find(|&i| newline(i) && text_precedes(rest, i));
                    let near = (0..max).rev().find(|&i| newline(i));
                    let want = exact.or(near).map_or_else(|| hard_cut(rest, max), |i| i + 1);
                    prop_assert_eq!(p.len(), want);
                }
                start += p.len();
            }
        }
    }

    #[test]
    fn a_tail_starts_a_line_or_at_a_character() {
        let text = "one\ntwo\n\nthree é";
        assert_eq!(&text[tail_cut(text, 1)..], "two\n\nthree é");
        assert_eq!(
            &text[tail_cut(text, 5)..],
            "three é",
            "not before a blank line"
        );
        assert_eq!(&text[tail_cut(text, 0)..], "two\n\nthree é");
        assert_eq!(tail_cut(text, 16), 17, "on a character boundary");
        assert_eq!(tail_cut(text, 99), text.len());
        assert_eq!(tail_cut("abcdef", 2), 2, "no newline: cut at the mark");
    }
}
