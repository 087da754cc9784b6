//! Which shard layout a directory holds: the one place that decides whether
//! `--data DIR` is a directory of token shards (rather than of text).
//!
//! Rules, in order: a `manifest.json` file → lmforge (`lmforge prepare`); a
//! `train.bin` file → nanoGPT; any `*_train_*.bin` or `*_val_*.bin` file →
//! llm.c; otherwise none.

use super::manifest::MANIFEST_FILE;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Which layout a directory was recognised as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Lmforge,
    NanoGpt,
    LlmC,
}

impl Layout {
    /// The layout of the shards in `dir`, or `None` if it holds none (or is
    /// not a directory, or does not exist). Errors only if the directory
    /// cannot be listed.
    pub fn detect(dir: &Path) -> Result<Option<Layout>> {
        if !dir.is_dir() {
            return Ok(None);
        }
        if dir.join(MANIFEST_FILE).is_file() {
            return Ok(Some(Layout::Lmforge));
        }
        if dir.join(NANOGPT_TRAIN).is_file() {
            return Ok(Some(Layout::NanoGpt));
        }
        let (train, val) = llmc_files(dir)?;
        if !train.is_empty() || !val.is_empty() {
            return Ok(Some(Layout::LlmC));
        }
        Ok(None)
    }
}

/// nanoGPT's file names.
pub(super) const NANOGPT_TRAIN: &str = "train.bin";
pub(super) const NANOGPT_VAL: &str = "val.bin";

/// llm.c's shards in `dir`: `(train, val)`, each sorted by name.
pub(super) fn llmc_files(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let mut train = Vec::new();
    let mut val = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if !name.ends_with(".bin") || !path.is_file() {
            continue;
        }
        if name.contains("_train_") {
            train.push(path);
        } else if name.contains("_val_") {
            val.push(path);
        }
    }
    train.sort();
    val.sort();
    Ok((train, val))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_told_apart_by_file_names() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(Layout::detect(d).unwrap(), None);
        assert_eq!(Layout::detect(&d.join("missing")).unwrap(), None);
        std::fs::write(d.join("notes.txt"), "text").unwrap();
        assert_eq!(Layout::detect(&d.join("notes.txt")).unwrap(), None);
        std::fs::write(d.join("fineweb_val_000000.bin"), "").unwrap();
        assert_eq!(Layout::detect(d).unwrap(), Some(Layout::LlmC));
        std::fs::write(d.join("train.bin"), "").unwrap();
        assert_eq!(Layout::detect(d).unwrap(), Some(Layout::NanoGpt));
        std::fs::write(d.join("manifest.json"), "{}").unwrap();
        assert_eq!(Layout::detect(d).unwrap(), Some(Layout::Lmforge));
    }
}
