//! A whole text corpus in memory, for `lmforge train --data FILE|DIR`: every
//! document the [`super::documents`] reader finds in a file, or
//! in every file under a directory (sorted by path, hidden names skipped),
//! in any format it reads, normalised as it normalises (a leading BOM
//! removed, CRLF → LF). Documents are joined with a `\n` between two when the
//! first does not end with one.

use super::documents::{self, ReadOptions};
use crate::error::{Error, Result};
use std::path::Path;

/// Tiny Shakespeare (public domain, 1.1 MB), gzip-compressed into the binary so
/// that `lmforge train` works with no data at hand.
const DEMO_CORPUS_GZ: &[u8] = include_bytes!("../../data/tinyshakespeare.txt.gz");

/// The demo corpus used when `--data` is not given.
pub fn demo_corpus() -> String {
    use std::io::Read;
    let mut text = String::new();
    flate2::read::GzDecoder::new(DEMO_CORPUS_GZ)
        .read_to_string(&mut text)
        .expect("the embedded demo corpus is valid gzip-compressed UTF-8");
    text
}

/// Read a corpus: a file, or every file under a directory, as one text.
/// Errors name the file: a missing path, an empty file, invalid UTF-8 (with
/// the offset of the first bad byte), or a directory with no text.
pub fn read_corpus(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let inputs = documents::expand_inputs(&[path], None)?;
    let mut text = String::new();
    documents::read_all(&inputs, &ReadOptions::default(), &mut |piece| {
        if piece.first && !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&piece.text);
        Ok(())
    })?;
    if text.is_empty() {
        return Err(if meta.is_dir() {
            Error::NoText { path: path.into() }
        } else {
            Error::EmptyFile { path: path.into() }
        });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_utf8_reports_offset_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.txt");
        std::fs::write(&path, b"hello \xff world").unwrap();
        let err = read_corpus(&path).unwrap_err().to_string();
        assert!(err.contains("bad.txt") && err.contains("offset 6"), "{err}");
    }

    #[test]
    fn empty_and_missing_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.txt");
        std::fs::write(&empty, b"").unwrap();
        let err = read_corpus(&empty).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        let missing = dir.path().join("missing.txt");
        let err = read_corpus(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.txt"), "{err}");
        let err = read_corpus(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no text found"), "{err}");
    }

    #[test]
    fn directory_joins_every_file_in_order_normalised() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("b.txt"), "second").unwrap();
        std::fs::write(dir.path().join("a.txt"), "\u{feff}first\r\n").unwrap();
        std::fs::write(dir.path().join("sub/c.md"), "third").unwrap();
        std::fs::write(
            dir.path().join("sub/d.jsonl"),
            "{\"text\": \"x\"}\n{\"text\": \"y\\n\"}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join(".hidden"), "not read").unwrap();
        std::fs::write(dir.path().join("empty.txt"), "").unwrap();
        assert_eq!(
            read_corpus(dir.path()).unwrap(),
            "first\nsecond\nthird\nx\ny\n"
        );
    }

    #[test]
    fn demo_corpus_is_tiny_shakespeare() {
        let text = demo_corpus();
        assert!(text.starts_with("First Citizen:"));
        assert!(text.len() > 1_000_000);
    }
}
