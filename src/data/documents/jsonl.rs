//! JSON Lines: one JSON object per line, its `text_field` string a document.
//! Blank lines are skipped, and a byte-order mark before the first line; a
//! line that is not a JSON object with that string field is an error naming
//! the file and line.
//!
//! A line is read into memory whole (to be parsed), so its length is bounded:
//! a record longer than [`MAX_RECORD_BYTES`] is an error naming the file and
//! line, or, with `--on-bad-archive skip`, is passed over without being held
//! in memory and listed with the skipped archives.

use super::reader::{DocReader, Stop, io_stop};
use super::{MAX_RECORD_BYTES, OnBad};
use crate::error::Error;
use std::io::{BufRead, Read};

/// How reading a line ended.
#[derive(Debug, PartialEq)]
enum Line {
    /// No more lines.
    End,
    /// The line is in the buffer (with its `\n`, unless it is the last).
    Whole,
    /// Longer than the bound: the buffer holds its first bytes, the rest is
    /// still in the stream.
    TooLong,
}

impl DocReader<'_> {
    pub(super) fn read_jsonl(
        &mut self,
        r: &mut dyn Read,
        display: &str,
        depth: usize,
    ) -> Result<(), Stop> {
        let mut r = std::io::BufReader::with_capacity(1 << 16, r);
        let mut line = Vec::new();
        let (mut line_no, mut offset) = (0u64, 0u64);
        loop {
            line.clear();
            let read = read_line(&mut r, &mut line, MAX_RECORD_BYTES)
                .map_err(|e| io_stop(display, depth, e))?;
            line_no += 1;
            let start = offset;
            offset += line.len() as u64;
            match read {
                Line::End => return Ok(()),
                Line::Whole if line_no == 1 => {
                    let record = super::strip_bom_bytes(&line);
                    let bom = (line.len() - record.len()) as u64;
                    self.read_record(record, display, start + bom, line_no)?
                }
                Line::Whole => self.read_record(&line, display, start, line_no)?,
                Line::TooLong => {
                    let reason = format!(
                        "line {line_no}: a record longer than {} MiB",
                        MAX_RECORD_BYTES >> 20
                    );
                    if self.opts.on_bad_archive == OnBad::Error {
                        return Err(Stop::Fatal(Error::format(
                            display,
                            format!("{reason} (use --on-bad-archive skip to skip such records)"),
                        )));
                    }
                    offset += skip_line(&mut r).map_err(|e| io_stop(display, depth, e))?;
                    self.stats
                        .bad_archives
                        .push(format!("{display}: {reason}, skipped"));
                }
            }
        }
    }

    /// One line: a record whose text field is a document.
    fn read_record(
        &mut self,
        line: &[u8],
        display: &str,
        offset: u64,
        line_no: u64,
    ) -> Result<(), Stop> {
        let text = match std::str::from_utf8(line) {
            Ok(text) => text,
            Err(e) => return self.bad_utf8(display, offset, e),
        };
        if text.trim().is_empty() {
            return Ok(());
        }
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            Error::format(display, format!("line {line_no}: not a JSON record: {e}"))
        })?;
        let field = self.opts.text_field.as_str();
        let Some(doc) = value.get(field).and_then(|v| v.as_str()) else {
            return Err(Stop::Fatal(Error::format(
                display,
                format!("line {line_no}: no string field {field:?} (see --text-field)"),
            )));
        };
        self.emit_document(doc, display)
    }
}

/// Read one line into `line`, unless it holds more than `max` bytes before
/// its newline.
fn read_line(r: &mut dyn BufRead, line: &mut Vec<u8>, max: usize) -> std::io::Result<Line> {
    loop {
        let buf = match r.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(if line.is_empty() {
                Line::End
            } else {
                Line::Whole
            });
        }
        let newline = buf.iter().position(|&b| b == b'\n');
        let take = newline.map_or(buf.len(), |i| i + 1);
        let content = line.len() + newline.unwrap_or(buf.len());
        if content > max {
            return Ok(Line::TooLong);
        }
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        if newline.is_some() {
            return Ok(Line::Whole);
        }
    }
}

/// Pass over the rest of a line, through its newline; returns the bytes passed.
fn skip_line(r: &mut dyn BufRead) -> std::io::Result<u64> {
    let mut skipped = 0u64;
    loop {
        let buf = match r.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(skipped);
        }
        let newline = buf.iter().position(|&b| b == b'\n');
        let take = newline.map_or(buf.len(), |i| i + 1);
        r.consume(take);
        skipped += take as u64;
        if newline.is_some() {
            return Ok(skipped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_bounded_and_long_ones_can_be_skipped() {
        let data = b"short\nmuch too long a line\nok";
        let mut r = std::io::BufReader::with_capacity(4, &data[..]);
        let mut line = Vec::new();
        assert_eq!(read_line(&mut r, &mut line, 8).unwrap(), Line::Whole);
        assert_eq!(line, b"short\n");
        line.clear();
        assert_eq!(read_line(&mut r, &mut line, 8).unwrap(), Line::TooLong);
        assert!(line.len() <= 8);
        let rest = skip_line(&mut r).unwrap() as usize;
        assert_eq!(line.len() + rest, "much too long a line\n".len());
        line.clear();
        assert_eq!(read_line(&mut r, &mut line, 8).unwrap(), Line::Whole);
        assert_eq!(line, b"ok");
        line.clear();
        assert_eq!(read_line(&mut r, &mut line, 8).unwrap(), Line::End);
    }
}
