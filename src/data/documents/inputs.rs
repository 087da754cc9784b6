//! Expanding input arguments (files, directories, glob patterns) into the
//! list of files to read.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// One input file found from the command-line arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct InputFile {
    /// Absolute path.
    pub path: PathBuf,
    pub bytes: u64,
}

/// Expand files, directories and globs into input files, in argument order
/// (sorted within each argument), without duplicates and without anything
/// under `exclude` (prepare's output directory).
pub fn expand_inputs<P: AsRef<Path>>(args: &[P], exclude: Option<&Path>) -> Result<Vec<InputFile>> {
    let exclude = exclude
        .map(|e| std::path::absolute(e).map_err(|err| Error::io(e, err)))
        .transpose()?;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for arg in args {
        let mut found = expand_one(arg.as_ref())?;
        found.sort();
        for p in found {
            let abs = std::path::absolute(&p).map_err(|e| Error::io(&p, e))?;
            if exclude.as_ref().is_some_and(|e| abs.starts_with(e)) || !seen.insert(abs.clone()) {
                continue;
            }
            let bytes = std::fs::metadata(&abs)
                .map_err(|e| Error::io(&abs, e))?
                .len();
            out.push(InputFile { path: abs, bytes });
        }
    }
    Ok(out)
}

/// The files one argument names: itself, the files under it, or the files
/// (and files under the directories) its glob pattern matches.
fn expand_one(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_dir() {
        return walk(path);
    }
    if path.exists() {
        return Ok(vec![path.to_path_buf()]);
    }
    let no_match = |why: String| Error::Config(format!("input {path:?}: no such file, and {why}"));
    let Some(pattern) = path.to_str() else {
        return Err(no_match("not a glob (not UTF-8)".into()));
    };
    let entries = glob::glob(pattern).map_err(|e| no_match(format!("not a glob: {e}")))?;
    let mut files = Vec::new();
    for entry in entries {
        let p = entry.map_err(|e| Error::io(e.path().to_path_buf(), e.into()))?;
        if p.is_dir() {
            files.extend(walk(&p)?);
        } else {
            files.push(p);
        }
    }
    if files.is_empty() {
        return Err(no_match("no file matches it as a pattern".into()));
    }
    Ok(files)
}

/// Every file under `dir`, recursively, skipping hidden names.
fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let path = entry.map_err(|e| Error::io(&d, e))?.path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    Ok(files)
}
