//! `lmforge.prepare`: corpora into token shards, as `lmforge prepare`.

use crate::errors::{OrPyErr, bad_input};
use lmforge::data::prepare::{OnBad, PrepareOptions};
use lmforge::tokenizer::TokenizerSpec;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::path::PathBuf;

fn on_bad(name: &str, value: &str) -> PyResult<OnBad> {
    match value {
        "error" => Ok(OnBad::Error),
        "skip" => Ok(OnBad::Skip),
        other => Err(bad_input(format!(
            "{name}: {other:?}: expected error or skip"
        ))),
    }
}

/// Tokenize `inputs` into token shards in `out`; returns the report as a dict.
#[pyfunction]
#[pyo3(signature = (inputs, tokenizer, out, *, val_fraction = 0.1, seed = 1337, threads = None,
    text_field = "text".to_string(), on_bad_utf8 = "error", on_bad_archive = "error",
    char_vocab_max = None, shard_tokens = 100_000_000, progress = true))]
#[allow(clippy::too_many_arguments)]
pub fn prepare<'py>(
    py: Python<'py>,
    inputs: Vec<PathBuf>,
    tokenizer: PathBuf,
    out: PathBuf,
    val_fraction: f64,
    seed: u64,
    threads: Option<usize>,
    text_field: String,
    on_bad_utf8: &str,
    on_bad_archive: &str,
    char_vocab_max: Option<usize>,
    shard_tokens: u64,
    progress: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let spec: TokenizerSpec = tokenizer.display().to_string().parse().py_err()?;
    let inputs = inputs.iter().map(|p| p.display().to_string()).collect();
    let mut opts = PrepareOptions::new(inputs, spec, &out);
    opts.val_fraction = val_fraction;
    opts.seed = seed;
    opts.threads = threads.unwrap_or(opts.threads);
    opts.text_field = text_field;
    opts.on_bad_utf8 = on_bad("on_bad_utf8", on_bad_utf8)?;
    opts.on_bad_archive = on_bad("on_bad_archive", on_bad_archive)?;
    opts.char_vocab_max = char_vocab_max;
    opts.shard_tokens = shard_tokens;
    opts.progress = progress;
    let r = py
        .detach(|| lmforge::data::prepare::prepare(&opts))
        .py_err()?;
    let report = PyDict::new(py);
    report.set_item("out", out)?;
    report.set_item("documents", r.documents)?;
    report.set_item("train_tokens", r.train_tokens)?;
    report.set_item("val_tokens", r.val_tokens)?;
    report.set_item("vocab_size", r.vocab_size)?;
    report.set_item("inputs_read", r.inputs_read)?;
    report.set_item("inputs_skipped", r.inputs_skipped)?;
    report.set_item("bytes_read", r.bytes_read)?;
    report.set_item("skipped_bad_utf8", r.skipped_bad_utf8)?;
    report.set_item("bad_archives", r.bad_archives)?;
    report.set_item("seconds", r.seconds)?;
    Ok(report)
}
