//! `lmforge.Error` and its subclasses, one per kind of library error, each
//! carrying the message the command line prints.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(lmforge, Error, PyException, "Any error lmforge reports.");
create_exception!(
    lmforge,
    BadInputError,
    Error,
    "An option, a file or data lmforge cannot use (bad values, malformed files, text outside the vocabulary)."
);
create_exception!(
    lmforge,
    RunExistsError,
    Error,
    "`train(out=...)` onto a directory that already holds a run, or an export onto existing files (pass `overwrite=True`)."
);
create_exception!(
    lmforge,
    RunInUseError,
    Error,
    "A run directory another lmforge process is writing (training, importing, exporting)."
);
create_exception!(
    lmforge,
    OutOfMemoryError,
    Error,
    "A model or batch that needs more memory than the machine has."
);
create_exception!(
    lmforge,
    NonFiniteError,
    Error,
    "A loss, gradient or logit that is NaN or infinite."
);
create_exception!(
    lmforge,
    FileError,
    Error,
    "A file that cannot be read or written."
);
create_exception!(
    lmforge,
    DeviceError,
    Error,
    "The CUDA device could not start or run."
);

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    m.add("BadInputError", py.get_type::<BadInputError>())?;
    m.add("RunExistsError", py.get_type::<RunExistsError>())?;
    m.add("RunInUseError", py.get_type::<RunInUseError>())?;
    m.add("OutOfMemoryError", py.get_type::<OutOfMemoryError>())?;
    m.add("NonFiniteError", py.get_type::<NonFiniteError>())?;
    m.add("FileError", py.get_type::<FileError>())?;
    m.add("DeviceError", py.get_type::<DeviceError>())?;
    Ok(())
}

/// The Python exception for a library error, with `context: ` before its
/// message where the command line adds the same context.
pub fn to_py(e: lmforge::Error, context: Option<&str>) -> PyErr {
    use lmforge::Error as E;
    let message = match context {
        Some(context) => format!("{context}: {e}"),
        None => e.to_string(),
    };
    match e {
        E::RunExists { .. } | E::OutputExists { .. } => RunExistsError::new_err(message),
        E::InUse { .. } => RunInUseError::new_err(message),
        E::Memory(_) => OutOfMemoryError::new_err(message),
        E::NonFinite(_) => NonFiniteError::new_err(message),
        E::Io { .. } => FileError::new_err(message),
        E::Cuda(_) => DeviceError::new_err(message),
        E::Distributed(_) => Error::new_err(message),
        E::EmptyFile { .. }
        | E::NotUtf8 { .. }
        | E::NoText { .. }
        | E::Config(_)
        | E::Data(_)
        | E::OutOfVocabulary(_)
        | E::Weights(_)
        | E::Format { .. } => BadInputError::new_err(message),
    }
}

/// `?` on a library result: the error as its Python exception.
pub trait OrPyErr<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T> OrPyErr<T> for lmforge::Result<T> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(|e| to_py(e, None))
    }
}

/// A bad argument found while converting (before the library is called).
pub fn bad_input(message: impl Into<String>) -> PyErr {
    BadInputError::new_err(message.into())
}
