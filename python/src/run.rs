//! `lmforge.Run`: a trained run directory loaded once, its metrics and
//! configuration as dicts, its text (`sample`, `chat`), and its tensors as
//! numpy arrays (`logits`, `loss`, `parameters`).

use crate::convert::{ids_arg, to_py};
use crate::errors::{OrPyErr, bad_input};
use crate::tokenizer::Tokenizer;
use lmforge::backend::cpu::Cpu;
use lmforge::chat::{ChatFormat, Message, Role};
use lmforge::model::{Model, Weights};
use lmforge::sample::SampleOptions;
use numpy::{IntoPyArray, PyArray1, PyArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{IntoPyDict, PyDict, PyList, PySlice};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// A run directory written by `lmforge train` (or `import-hf`), loaded.
#[pyclass(module = "lmforge", frozen)]
pub struct Run {
    path: PathBuf,
    model: Model,
    params: Vec<f32>,
    tokenizer: Arc<dyn lmforge::tokenizer::Tokenizer>,
    /// The parameters as one read-only numpy array, made on first use.
    flat: OnceLock<Py<PyArray1<f32>>>,
}

/// The sampling options, checked (their names are `lmforge sample`'s flags).
#[allow(clippy::too_many_arguments)]
fn sampling(
    max_new_tokens: usize,
    temperature: f32,
    top_k: Option<usize>,
    top_p: Option<f32>,
    min_p: Option<f32>,
    repetition_penalty: f32,
    stop: Vec<String>,
    seed: u64,
) -> PyResult<SampleOptions> {
    let opts = SampleOptions {
        max_new_tokens,
        temperature,
        top_k,
        top_p,
        min_p,
        repetition_penalty,
        stop,
        seed,
        ..SampleOptions::default()
    };
    opts.validate().py_err()?;
    Ok(opts)
}

impl Run {
    fn chat_format(&self) -> lmforge::Result<Option<ChatFormat>> {
        ChatFormat::find(&self.path, self.tokenizer.as_ref())
    }

    fn loaded(&self) -> (&Model, Weights<'_, Cpu>, &dyn lmforge::tokenizer::Tokenizer) {
        (
            &self.model,
            Weights::plain(&self.params),
            self.tokenizer.as_ref(),
        )
    }
}

#[pymethods]
impl Run {
    #[new]
    fn new(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let (model, params, tokenizer) =
            py.detach(|| lmforge::sample::load_run(&path))
                .map_err(|e| {
                    crate::errors::to_py(e, Some(&format!("loading the run {}", path.display())))
                })?;
        Ok(Run {
            path,
            model,
            params,
            tokenizer: Arc::from(tokenizer),
            flat: OnceLock::new(),
        })
    }

    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// The run's tokenizer.
    #[getter]
    fn tokenizer(&self) -> Tokenizer {
        Tokenizer {
            inner: self.tokenizer.clone(),
        }
    }

    /// The training configuration (`train_config.json`), or the model's
    /// (`config.json`) for an imported model.
    #[getter]
    fn config(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let json = match lmforge::train::run::RunFile::load(&self.path) {
            Ok(run) => serde_json::to_value(&run.config),
            Err(_) => serde_json::to_value(&self.model.config),
        };
        to_py(py, &json.map_err(|e| bad_input(e.to_string()))?)
    }

    /// Every record of `metrics.jsonl`, in order, as dicts.
    #[getter]
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let path = self.path.join("metrics.jsonl");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(crate::errors::to_py(lmforge::Error::io(&path, e), None)),
        };
        let list = PyList::empty(py);
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let record: serde_json::Value = serde_json::from_str(line).map_err(|e| {
                crate::errors::to_py(
                    lmforge::Error::format(&path, format!("line {}: {e}", i + 1)),
                    None,
                )
            })?;
            list.append(to_py(py, &record)?)?;
        }
        Ok(list)
    }

    /// The metrics as a pandas DataFrame (needs pandas).
    fn metrics_frame<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let pandas = py.import("pandas")?;
        pandas.call_method1("DataFrame", (self.metrics(py)?,))
    }

    /// Continue `prompt`; returns the new text (without the prompt).
    #[pyo3(signature = (prompt = "\n", *, max_new_tokens = 200, temperature = 1.0, top_k = None,
        top_p = None, min_p = None, repetition_penalty = 1.0, stop = Vec::new(), seed = 1337))]
    #[allow(clippy::too_many_arguments)]
    fn sample(
        &self,
        py: Python<'_>,
        prompt: &str,
        max_new_tokens: usize,
        temperature: f32,
        top_k: Option<usize>,
        top_p: Option<f32>,
        min_p: Option<f32>,
        repetition_penalty: f32,
        stop: Vec<String>,
        seed: u64,
    ) -> PyResult<String> {
        let opts = sampling(
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            min_p,
            repetition_penalty,
            stop,
            seed,
        )?;
        let reply = py.detach(|| {
            let ids = self.tokenizer.encode(prompt)?;
            // As `lmforge sample`: a template that does not load only loses its stop tokens.
            let format = self.chat_format().unwrap_or(None);
            let noop = |_: &str| Ok(lmforge::sample::Flow::Continue);
            lmforge::chat::continue_text(
                &Cpu::new(),
                self.loaded(),
                format.as_ref(),
                &ids,
                &opts,
                noop,
            )
        });
        Ok(reply.py_err()?.text)
    }

    /// The assistant's reply to `messages` (dicts with `role` and `content`).
    #[pyo3(signature = (messages, *, max_new_tokens = 256, temperature = 1.0, top_k = None,
        top_p = None, min_p = None, repetition_penalty = 1.0, stop = Vec::new(), seed = 1337))]
    #[allow(clippy::too_many_arguments)]
    fn chat(
        &self,
        py: Python<'_>,
        messages: Vec<Bound<'_, PyDict>>,
        max_new_tokens: usize,
        temperature: f32,
        top_k: Option<usize>,
        top_p: Option<f32>,
        min_p: Option<f32>,
        repetition_penalty: f32,
        stop: Vec<String>,
        seed: u64,
    ) -> PyResult<String> {
        let opts = sampling(
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            min_p,
            repetition_penalty,
            stop,
            seed,
        )?;
        let messages = messages.iter().map(message).collect::<PyResult<Vec<_>>>()?;
        if messages.last().map(|m| m.role) != Some(Role::User) {
            return Err(bad_input("the last message must be the user's"));
        }
        let reply = py.detach(|| {
            let format = self.chat_format()?;
            lmforge::chat::answer(
                &Cpu::new(),
                self.loaded(),
                format.as_ref(),
                &messages,
                &opts,
            )
        });
        Ok(reply.py_err()?.text)
    }

    /// Every position's logits: `(T, V)` for one sequence of ids, `(B, T, V)` for a batch.
    fn logits<'py>(&self, py: Python<'py>, ids: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        let (ids, batch) = ids_arg(ids)?;
        let b = batch.unwrap_or(1);
        let logits = py
            .detach(|| {
                lmforge::model::score::logits(&Cpu::new(), &self.model, &self.params, &ids, b)
            })
            .py_err()?;
        let (t, v) = (ids.len() / b, self.model.config.vocab_size);
        let array = logits.into_pyarray(py);
        Ok(match batch {
            Some(b) => array.reshape([b, t, v])?.into_any(),
            None => array.reshape([t, v])?.into_any(),
        })
    }

    /// The mean next-token cross-entropy of the ids (one sequence or a batch).
    fn loss(&self, py: Python<'_>, ids: &Bound<'_, PyAny>) -> PyResult<f32> {
        let (ids, batch) = ids_arg(ids)?;
        let b = batch.unwrap_or(1);
        py.detach(|| lmforge::model::score::loss(&Cpu::new(), &self.model, &self.params, &ids, b))
            .py_err()
    }

    /// Every tensor by its Hugging Face name, as read-only numpy views of
    /// the weights.
    fn parameters<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let flat = match self.flat.get() {
            Some(flat) => flat.bind(py).clone(),
            None => {
                let flat = self.params.clone().into_pyarray(py);
                flat.call_method("setflags", (), Some(&[("write", false)].into_py_dict(py)?))?;
                let _ = self.flat.set(flat.clone().unbind());
                flat
            }
        };
        let dict = PyDict::new(py);
        for spec in &self.model.layout.tensors {
            let (start, end) = (spec.range.start as isize, spec.range.end as isize);
            let view = flat.get_item(PySlice::new(py, start, end, 1))?;
            dict.set_item(
                &spec.name,
                view.call_method1("reshape", (spec.shape.clone(),))?,
            )?;
        }
        Ok(dict)
    }

    /// Write the run as a Hugging Face folder (`transformers` loads it), as
    /// `lmforge export-hf` does: an existing output is replaced only with
    /// `overwrite`, and only once the new files are complete.
    #[pyo3(signature = (out, *, overwrite = false))]
    fn export_hf(&self, py: Python<'_>, out: PathBuf, overwrite: bool) -> PyResult<PathBuf> {
        py.detach(|| {
            lmforge::rundir::write_new_output(&out, "lmforge export-hf", overwrite, |dir| {
                lmforge::hf::export(&self.path, dir)
            })
        })
        .py_err()?;
        Ok(out)
    }

    fn __repr__(&self) -> String {
        let c = &self.model.config;
        format!(
            "Run({:?}, {} parameters, n_layer={}, n_embd={}, block_size={}, vocab_size={})",
            self.path.display().to_string(),
            self.model.num_params(),
            c.n_layer,
            c.n_embd,
            c.block_size,
            c.vocab_size
        )
    }
}

/// `{"role": ..., "content": ...}` as a chat message.
fn message(dict: &Bound<'_, PyDict>) -> PyResult<Message> {
    let field = |name: &str| -> PyResult<String> {
        dict.get_item(name)?
            .ok_or_else(|| bad_input(format!("a message needs a {name:?}")))?
            .extract()
    };
    let role = match field("role")?.as_str() {
        "system" => Role::System,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        other => {
            return Err(bad_input(format!(
                "unknown role {other:?}: system, user or assistant"
            )));
        }
    };
    Ok(Message::new(role, field("content")?))
}
