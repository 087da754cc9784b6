//! Streaming text that must end at a stop string.
//!
//! Tokens arrive as bytes. The text is printed as soon as it is known to be
//! part of the reply, which means holding back two kinds of tail:
//! - an incomplete UTF-8 character (byte-level BPE may cut one between tokens);
//! - a tail that is the start of a stop string (`"\n\n"` when the text so far
//!   ends in `"\n"`): the next token decides whether it is printed or is the
//!   stop.
//!
//! A stop string found anywhere in the held-back text ends the reply there:
//! the stop string and whatever followed it in the same token are dropped.

/// The unprinted tail of a streamed reply.
#[derive(Debug, Clone, Default)]
pub struct StopText {
    stops: Vec<String>,
    pending: Vec<u8>,
}

impl StopText {
    pub fn new(stops: &[String]) -> Self {
        StopText {
            stops: stops.to_vec(),
            pending: Vec::new(),
        }
    }

    /// Add the bytes of one token; append to `out` the text now safe to print.
    /// Returns the index of the stop string that ended the text, if one did
    /// (then `out` has the text before it and nothing more will come).
    pub fn push(&mut self, bytes: &[u8], out: &mut String) -> Option<usize> {
        self.pending.extend_from_slice(bytes);
        if let Some((at, k)) = self.first_stop() {
            self.pending.truncate(at);
            self.finish(out);
            return Some(k);
        }
        let safe = self.pending.len() - self.partial_stop();
        let used = decode_utf8(&self.pending[..safe], out);
        self.pending.drain(..used);
        None
    }

    /// Append whatever is still held back (the reply ended some other way).
    pub fn finish(&mut self, out: &mut String) {
        out.push_str(&String::from_utf8_lossy(&self.pending));
        self.pending.clear();
    }

    /// The earliest stop string in the pending bytes: (position, which).
    fn first_stop(&self) -> Option<(usize, usize)> {
        let mut best: Option<(usize, usize)> = None;
        for (k, stop) in self.stops.iter().enumerate() {
            let found = self
                .pending
                .windows(stop.len())
                .position(|w| w == stop.as_bytes());
            if let Some(at) = found
                && best.is_none_or(|(b, _)| at < b)
            {
                best = Some((at, k));
            }
        }
        best
    }

    /// The length of the longest tail of the pending bytes that a stop string
    /// starts with (and is shorter than it).
    fn partial_stop(&self) -> usize {
        let p = &self.pending;
        let longest = |stop: &String| {
            (1..stop.len().min(p.len() + 1))
                .rev()
                .find(|&n| p.ends_with(&stop.as_bytes()[..n]))
                .unwrap_or(0)
        };
        self.stops.iter().map(longest).max().unwrap_or(0)
    }
}

/// Decode `bytes` into `out` up to an incomplete character at the end
/// (invalid bytes become U+FFFD); returns how many bytes were used.
fn decode_utf8(mut bytes: &[u8], out: &mut String) -> usize {
    let start = bytes.len();
    loop {
        match std::str::from_utf8(bytes) {
            Ok(text) => {
                out.push_str(text);
                return start;
            }
            Err(e) => {
                let (valid, rest) = bytes.split_at(e.valid_up_to());
                // The first `valid_up_to` bytes are valid: this never falls back.
                out.push_str(std::str::from_utf8(valid).unwrap_or_default());
                match e.error_len() {
                    Some(n) => {
                        out.push(char::REPLACEMENT_CHARACTER);
                        bytes = &rest[n..];
                    }
                    None => return start - rest.len(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stream `tokens` through a `StopText`: the printed pieces, and the stop.
    fn stream(stops: &[&str], tokens: &[&[u8]]) -> (Vec<String>, Option<usize>) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut text = StopText::new(&stops);
        let mut pieces = Vec::new();
        for t in tokens {
            let mut out = String::new();
            let stop = text.push(t, &mut out);
            pieces.push(out);
            if stop.is_some() {
                return (pieces, stop);
            }
        }
        let mut out = String::new();
        text.finish(&mut out);
        pieces.push(out);
        (pieces, None)
    }

    #[test]
    fn a_partial_stop_is_held_until_decided() {
        let (pieces, stop) = stream(&["\n\n"], &[b"Hi", b"\n", b" there", b"\n", b"\nX"]);
        assert_eq!(pieces, ["Hi", "", "\n there", "", ""]);
        assert_eq!(stop, Some(0));
    }

    #[test]
    fn the_stop_and_what_follows_it_are_dropped() {
        let (pieces, stop) = stream(&["END", "STOP"], &[b"abc", b"xSTOPyEND"]);
        assert_eq!(pieces.concat(), "abcx");
        assert_eq!(stop, Some(1), "the earliest stop in the text wins");
        let (pieces, stop) = stream(&["ab"], &[b"xa"]);
        assert_eq!(pieces, ["x", "a"], "a held tail is printed at the end");
        assert_eq!(stop, None);
    }

    #[test]
    fn split_characters_wait_for_their_last_byte() {
        let e = "é".as_bytes();
        let (pieces, _) = stream(&[], &[&e[..1], &e[1..], b"\xff!"]);
        assert_eq!(pieces, ["", "é", "\u{FFFD}!", ""]);
        let (pieces, stop) = stream(&["€"], &[b"1", &"€".as_bytes()[..2], &"€".as_bytes()[2..]]);
        assert_eq!(pieces.concat(), "1");
        assert_eq!(stop, Some(0));
    }
}
