//! `lmforge.Tokenizer`: the library's tokenizers, with ids as numpy `uint32` arrays.

use crate::errors::{OrPyErr, bad_input};
use lmforge::tokenizer::{self, CharTokenizer, Pattern};
use numpy::{IntoPyArray, PyArray1};
use pyo3::prelude::*;
use rayon::prelude::*;
use std::path::PathBuf;
use std::sync::Arc;

/// Text to token ids and back.
#[pyclass(module = "lmforge", frozen)]
pub struct Tokenizer {
    pub inner: Arc<dyn tokenizer::Tokenizer>,
}

impl Tokenizer {
    pub fn new(inner: Box<dyn tokenizer::Tokenizer>) -> Self {
        Tokenizer {
            inner: Arc::from(inner),
        }
    }
}

#[pymethods]
impl Tokenizer {
    /// A character-level tokenizer whose vocabulary is the characters of `text`.
    #[staticmethod]
    fn char(text: &str) -> PyResult<Self> {
        Ok(Self::new(Box::new(
            CharTokenizer::from_text(text).py_err()?,
        )))
    }

    /// GPT-2's byte-level BPE (tiktoken's `gpt2`).
    #[staticmethod]
    fn gpt2() -> PyResult<Self> {
        Ok(Self::new(Box::new(tokenizer::gpt2().py_err()?)))
    }

    /// A Hugging Face `tokenizer.json` (a run's, or any model's).
    #[staticmethod]
    fn from_file(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        Ok(Self::new(py.detach(|| tokenizer::load(&path)).py_err()?))
    }

    /// Train a byte-level BPE on `files` (files, folders, glob patterns).
    #[staticmethod]
    #[pyo3(signature = (files, vocab_size, special = Vec::new(), pattern = "gpt2", skip_invalid_utf8 = false))]
    fn train(
        py: Python<'_>,
        files: Vec<PathBuf>,
        vocab_size: usize,
        special: Vec<String>,
        pattern: &str,
        skip_invalid_utf8: bool,
    ) -> PyResult<Self> {
        let pattern = Pattern::from_name(pattern)
            .ok_or_else(|| bad_input(format!("unknown pattern {pattern:?}; use gpt2 or gpt4")))?;
        let config = tokenizer::train::TrainConfig {
            vocab_size,
            pattern,
            specials: special,
            skip_invalid_utf8,
        };
        let (bpe, _report) = py
            .detach(|| tokenizer::train::train_files(&files, &config))
            .py_err()?;
        Ok(Self::new(Box::new(bpe)))
    }

    /// The ids of `text` (special tokens written in the text are special tokens).
    fn encode<'py>(&self, py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyArray1<u32>>> {
        let ids = py.detach(|| self.inner.encode(text)).py_err()?;
        Ok(ids.into_pyarray(py))
    }

    /// The ids of each text, encoded in parallel.
    fn encode_batch<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<String>,
    ) -> PyResult<Vec<Bound<'py, PyArray1<u32>>>> {
        let all: lmforge::Result<Vec<Vec<u32>>> =
            py.detach(|| texts.par_iter().map(|t| self.inner.encode(t)).collect());
        Ok(all
            .py_err()?
            .into_iter()
            .map(|ids| ids.into_pyarray(py))
            .collect())
    }

    /// The text of `ids` (bytes that are not UTF-8 become U+FFFD).
    fn decode(&self, ids: &Bound<'_, PyAny>) -> PyResult<String> {
        let (ids, batch) = crate::convert::ids_arg(ids)?;
        if batch.is_some() {
            return Err(bad_input("decode takes one sequence of ids"));
        }
        let vocab = self.inner.vocab_size();
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(bad_input(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            )));
        }
        Ok(self.inner.decode(&ids))
    }

    /// Write the tokenizer as a Hugging Face `tokenizer.json`.
    fn save(&self, path: PathBuf) -> PyResult<()> {
        self.inner.save(&path).py_err()
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }

    /// `char`, `gpt2`, `bpe` or `hf`.
    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    /// The end-of-text token's id, if the vocabulary has one.
    #[getter]
    fn eot_token(&self) -> Option<u32> {
        self.inner.eot_token()
    }

    fn __len__(&self) -> usize {
        self.inner.vocab_size()
    }

    fn __repr__(&self) -> String {
        format!(
            "Tokenizer(kind={:?}, vocab_size={})",
            self.inner.kind(),
            self.inner.vocab_size()
        )
    }
}
