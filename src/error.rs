//! The library's error type: every failure a user can cause carries enough
//! context (file, byte offset, field name) to be fixed without a debugger.

use std::path::PathBuf;

/// Errors raised by the lmforge library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: file is empty")]
    EmptyFile { path: PathBuf },
    #[error("{path}: not valid UTF-8 text (first bad byte at offset {offset})")]
    NotUtf8 { path: PathBuf, offset: u64 },
    #[error(
        "{path}: no text found in this directory (no files, or only empty ones; names starting with '.' are skipped)"
    )]
    NoText { path: PathBuf },
    #[error("invalid config: {0}")]
    Config(String),
    #[error("{0}")]
    Data(String),
    /// Weights that cannot be kept in the type asked for (`--weights`).
    #[error("weights: {0}")]
    Weights(String),
    #[error("characters not in the vocabulary: {0}")]
    OutOfVocabulary(String),
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    /// `train --out` onto a directory that already holds a run.
    #[error(
        "{path} already holds a training run ({files}); continue it with \
         `lmforge train --resume {path}`, or pass --overwrite to replace it"
    )]
    RunExists { path: PathBuf, files: String },
    /// A folder another process is writing (see [`crate::rundir::RunLock`]).
    #[error("{path} is in use by {holder}; wait until it ends, or stop it, before writing there")]
    InUse { path: PathBuf, holder: String },
    /// An output (a folder of a run or an export, or one file) that already
    /// exists: a command never replaces what it did not make unless asked.
    #[error(
        "{path} already exists{holds}; pass --overwrite to replace it, or choose another --out"
    )]
    OutputExists { path: PathBuf, holds: String },
    /// A loss or gradient norm that is NaN or infinite: training stops
    /// rather than write a model full of NaN.
    #[error("{0}")]
    NonFinite(String),
    /// A configuration that needs more memory than the machine has, or whose
    /// size does not even fit in a 64-bit count.
    #[error("{0}")]
    Memory(String),
    /// Several processes training together: a launch this build cannot
    /// join, or a rank that stopped answering.
    #[error("{0}")]
    Distributed(String),
    /// The CUDA backend could not start or run: a library not found or not
    /// loadable, no GPU, a driver too old, a kernel that did not compile.
    #[error("--device cuda: {0}")]
    Cuda(String),
}

impl Error {
    /// Wrap an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A malformed file: what is wrong and where.
    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
