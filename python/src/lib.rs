//! `import lmforge`: the Python package over the lmforge library.
//!
//! Every function here converts Python values to the library's types, calls
//! one library function (with the GIL released while it computes), and
//! converts the result back: tokenizers ([`tokenizer`]), `prepare`
//! ([`data`]), `train` and its `Training` handle ([`training`]), and a
//! trained `Run` as numpy arrays and text ([`run`]). Library errors become
//! `lmforge.Error` subclasses ([`errors`]); JSON values become dicts and
//! lists ([`convert`]). The typed interface, with docstrings, is
//! `lmforge.pyi` beside this crate.

mod convert;
mod data;
mod errors;
mod run;
mod tokenizer;
mod training;

use pyo3::prelude::*;

#[pymodule]
fn lmforge(m: &Bound<'_, PyModule>) -> PyResult<()> {
    errors::register(m)?;
    m.add_class::<tokenizer::Tokenizer>()?;
    m.add_class::<run::Run>()?;
    m.add_class::<training::Training>()?;
    m.add_function(wrap_pyfunction!(data::prepare, m)?)?;
    m.add_function(wrap_pyfunction!(training::train, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
