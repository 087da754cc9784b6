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
    /// Last modification, in nanoseconds since 1970, where the system tells.
    pub modified_ns: Option<u64>,
}

/// Expand files, directories and globs into input files, in argument order
/// (sorted within each argument), without duplicates and without anything
/// under `exclude` (prepare's output directory). A file reached twice
/// through links (the same canonical path) is read once, with a warning.
pub fn expand_inputs<P: AsRef<Path>>(args: &[P], exclude: Option<&Path>) -> Result<Vec<InputFile>> {
    let exclude = exclude
        .map(|e| std::path::absolute(e).map_err(|err| Error::io(e, err)))
        .transpose()?;
    let mut seen = std::collections::HashSet::new();
    let mut canonical: std::collections::HashMap<PathBuf, PathBuf> = Default::default();
    let mut out = Vec::new();
    for arg in args {
        let mut found = expand_one(arg.as_ref())?;
        found.sort();
        for p in found {
            let abs = std::path::absolute(&p).map_err(|e| Error::io(&p, e))?;
            if exclude.as_ref().is_some_and(|e| abs.starts_with(e)) || !seen.insert(abs.clone()) {
                continue;
            }
            let real = std::fs::canonicalize(&abs).map_err(|e| Error::io(&abs, e))?;
            if let Some(first) = canonical.get(&real) {
                crate::diag::warn(format!(
                    "{} is {} again (through a link); reading it once",
                    abs.display(),
                    first.display()
                ));
                continue;
            }
            canonical.insert(real, abs.clone());
            let meta = std::fs::metadata(&abs).map_err(|e| Error::io(&abs, e))?;
            let modified_ns = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .and_then(|d| u64::try_from(d.as_nanos()).ok());
            out.push(InputFile {
                path: abs,
                bytes: meta.len(),
                modified_ns,
            });
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
        } else if readable_kind(&p) {
            files.push(p);
        }
    }
    if files.is_empty() {
        return Err(no_match("no file matches it as a pattern".into()));
    }
    Ok(files)
}

/// Whether a file found in a directory or by a pattern is one to read: a
/// regular file (or a link to one). A FIFO, socket or device is skipped with
/// a warning: reading a FIFO nobody writes to would wait for ever. (One
/// named on the command line is read as given.) A path whose kind cannot be
/// told (a dangling link) is kept, for opening it to say why.
fn readable_kind(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return true;
    };
    if !meta.is_file() {
        crate::diag::warn(format!(
            "{}: not a regular file (a FIFO, socket or device); skipping it",
            path.display()
        ));
    }
    meta.is_file()
}

/// Every file under `dir`, recursively, skipping hidden names and what is
/// not a regular file ([`readable_kind`]). A directory
/// reached a second time (a symbolic link to a parent or to a directory
/// already walked) is skipped with a warning, so a link loop is neither
/// followed until `ELOOP` nor read over and over.
fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut visited: std::collections::HashMap<PathBuf, PathBuf> = Default::default();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let real = std::fs::canonicalize(&d).map_err(|e| Error::io(&d, e))?;
        if let Some(first) = visited.get(&real) {
            crate::diag::warn(format!(
                "{} is the directory {} again (a symbolic link loop?); skipping it",
                d.display(),
                first.display()
            ));
            continue;
        }
        visited.insert(real, d.clone());
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
            } else if readable_kind(&path) {
                files.push(path);
            }
        }
    }
    Ok(files)
}
