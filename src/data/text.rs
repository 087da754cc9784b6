//! Reading a text corpus: one UTF-8 file, or every `.txt` file under a
//! directory (sorted by path, joined with a newline between files).
//!
//! Text is normalised the same way everywhere: a leading byte-order mark is
//! removed and Windows line endings (CRLF) become `\n`.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

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

/// Remove a UTF-8 byte-order mark and turn CRLF line endings into LF.
pub fn normalize(text: &str) -> String {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.contains("\r\n") {
        text.replace("\r\n", "\n")
    } else {
        text.to_owned()
    }
}

/// Read one UTF-8 text file, normalised; errors name the file and, for bad
/// UTF-8, the byte offset of the first invalid byte.
pub fn read_text_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.is_empty() {
        return Err(Error::EmptyFile { path: path.into() });
    }
    let text = std::str::from_utf8(&bytes).map_err(|e| Error::NotUtf8 {
        path: path.into(),
        offset: e.valid_up_to() as u64,
    })?;
    Ok(normalize(text))
}

/// All `.txt` files under `dir`, recursively, sorted by path.
fn txt_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let path = entry.map_err(|e| Error::io(&d, e))?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "txt") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Read a corpus: a text file, or a directory of `.txt` files joined by newlines.
pub fn read_corpus(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_dir() {
        return read_text_file(path);
    }
    let files = txt_files(path)?;
    if files.is_empty() {
        return Err(Error::EmptyDirectory { path: path.into() });
    }
    let mut text = String::new();
    for file in &files {
        match read_text_file(file) {
            Err(Error::EmptyFile { .. }) => continue,
            Err(e) => return Err(e),
            Ok(t) => {
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str(&t);
            }
        }
    }
    if text.is_empty() {
        return Err(Error::EmptyFile { path: path.into() });
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bom_and_crlf_are_normalised() {
        assert_eq!(normalize("\u{feff}a\r\nb\r\n"), "a\nb\n");
        assert_eq!(normalize("a\rb"), "a\rb");
    }

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
        assert!(
            read_corpus(&empty)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        let missing = dir.path().join("missing.txt");
        assert!(
            read_corpus(&missing)
                .unwrap_err()
                .to_string()
                .contains("missing.txt")
        );
    }

    #[test]
    fn directory_joins_txt_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("b.txt"), "second").unwrap();
        std::fs::write(dir.path().join("a.txt"), "first\r\n").unwrap();
        std::fs::write(dir.path().join("sub/c.txt"), "third").unwrap();
        std::fs::write(dir.path().join("skip.md"), "not text").unwrap();
        assert_eq!(read_corpus(dir.path()).unwrap(), "first\nsecond\nthird");
    }

    #[test]
    fn demo_corpus_is_tiny_shakespeare() {
        let text = demo_corpus();
        assert!(text.starts_with("First Citizen:"));
        assert!(text.len() > 1_000_000);
    }
}
