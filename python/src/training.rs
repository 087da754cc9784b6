//! `lmforge.train` and its `Training` handle: the library's training loop
//! on a thread of its own (the GIL is not held while it trains), its metrics
//! records handed to Python as they are written, and a stop flag that ends
//! the run at a step boundary with a checkpoint (`.stop()`, Ctrl-C or
//! Jupyter's interrupt), so that `train(resume=...)` continues it.

use crate::convert::{from_py, to_py};
use crate::errors::bad_input;
use lmforge::backend::Backend;
use lmforge::train::{
    FineTuneOptions, Observe, OnNan, Parallel, Safeguards, TrainJob, TrainOverrides, TrainRequest,
    TrainSummary,
};
use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;
use pyo3::types::{PyCFunction, PyDict};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often a waiting Python thread looks for Ctrl-C.
const SIGNAL_POLL: Duration = Duration::from_millis(50);

type Outcome = lmforge::Result<TrainSummary>;

/// A training run in progress. Iterate it for its metrics records.
#[pyclass(module = "lmforge", frozen)]
pub struct Training {
    out: PathBuf,
    records: Mutex<Receiver<serde_json::Value>>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<Outcome>>>,
    /// The summary once the thread has ended (or how it failed).
    ended: Mutex<Option<PyResult<TrainSummary>>>,
    /// The SIGINT handler that was there before this run's, and this run's.
    interrupt: Mutex<Option<(Py<PyAny>, Py<PyAny>)>>,
}

/// While training runs, SIGINT (Ctrl-C, Jupyter's interrupt button) sets
/// the stop flag, wherever Python is at that moment (waiting for a record,
/// or drawing a plot in the loop's body), then goes on to the handler that
/// was there before (which raises KeyboardInterrupt). Python lets only the
/// main thread set handlers: elsewhere this does nothing (`None`).
fn install_interrupt(py: Python<'_>, stop: Arc<AtomicBool>) -> Option<(Py<PyAny>, Py<PyAny>)> {
    let signal = py.import("signal").ok()?;
    let sigint = signal.getattr("SIGINT").ok()?;
    let previous = signal.call_method1("getsignal", (&sigint,)).ok()?;
    let chained = previous.clone().unbind();
    let handler = PyCFunction::new_closure(py, None, None, move |args, _kwargs| {
        stop.store(true, Ordering::SeqCst);
        let previous = chained.bind(args.py());
        match previous.is_callable() {
            true => previous.call1(args).map(Bound::unbind),
            false => Err(PyKeyboardInterrupt::new_err(())),
        }
    })
    .ok()?;
    signal.call_method1("signal", (&sigint, &handler)).ok()?;
    Some((previous.unbind(), handler.into_any().unbind()))
}

/// Put back the SIGINT handler `install_interrupt` replaced, if this run's
/// is still the one in place.
fn restore_interrupt(py: Python<'_>, (previous, ours): (Py<PyAny>, Py<PyAny>)) {
    let restore = || -> PyResult<()> {
        let signal = py.import("signal")?;
        let sigint = signal.getattr("SIGINT")?;
        if signal
            .call_method1("getsignal", (&sigint,))?
            .is(ours.bind(py))
        {
            signal.call_method1("signal", (&sigint, previous.bind(py)))?;
        }
        Ok(())
    };
    let _ = restore(); // outside the main thread: nothing was installed there
}

/// A `clap` value name (`char-cpu`, `skip`, `c_attn`) as its enum, or an
/// error listing the names.
fn choice<T: clap::ValueEnum>(option: &str, value: &str) -> PyResult<T> {
    T::from_str(value, false).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value())
            .map(|p| p.get_name().to_string())
            .collect();
        bad_input(format!(
            "{option}: {value:?} is not one of {}",
            names.join(", ")
        ))
    })
}

/// The hyperparameter keyword arguments (`max_iters=...`, the flags of
/// `lmforge train` with `_` for `-`) as the library's overrides; an unknown
/// name is refused by name.
fn overrides(options: Option<&Bound<'_, PyDict>>) -> PyResult<TrainOverrides> {
    let mut table = serde_json::Map::new();
    for (key, value) in options.into_iter().flat_map(|d| d.iter()) {
        let key: String = key.extract()?;
        let value = from_py(&key, &value)?;
        if !value.is_null() {
            table.insert(key, value);
        }
    }
    serde_json::from_value(serde_json::Value::Object(table))
        .map_err(|e| bad_input(format!("lmforge.train: {e}")))
}

/// Train a model, fine-tune one (`init_from=`), or continue a run
/// (`resume=`); returns at once with the `Training` handle.
#[pyfunction]
#[pyo3(signature = (out = None, data = None, preset = None, *, resume = None, config = None,
    threads = None, device = "cpu", quiet = true, overwrite = false, on_nan = "stop",
    ignore_memory_check = false, init_from = None, freeze_embeddings = false, freeze_layers = 0,
    lora_rank = None, lora_alpha = None, lora_targets = None, sft = None, plot = "png",
    sample_every_eval = false, allow_partial = false, eval_choices = None, **options))]
#[allow(clippy::too_many_arguments)]
pub fn train(
    py: Python<'_>,
    out: Option<PathBuf>,
    data: Option<PathBuf>,
    preset: Option<&str>,
    resume: Option<PathBuf>,
    config: Option<PathBuf>,
    threads: Option<usize>,
    device: &str,
    quiet: bool,
    overwrite: bool,
    on_nan: &str,
    ignore_memory_check: bool,
    init_from: Option<PathBuf>,
    freeze_embeddings: bool,
    freeze_layers: usize,
    lora_rank: Option<usize>,
    lora_alpha: Option<f32>,
    lora_targets: Option<Vec<String>>,
    sft: Option<PathBuf>,
    plot: &str,
    sample_every_eval: bool,
    allow_partial: bool,
    eval_choices: Option<PathBuf>,
    options: Option<&Bound<'_, PyDict>>,
) -> PyResult<Training> {
    let lora_targets = lora_targets
        .map(|names| names.iter().map(|n| choice("lora_targets", n)).collect())
        .transpose()?;
    let request = TrainRequest {
        data,
        preset: preset.map(|p| choice("preset", p)).transpose()?,
        config,
        out,
        resume,
        overrides: overrides(options)?,
        finetune: FineTuneOptions {
            init_from: init_from.map(|p| p.display().to_string()),
            freeze_embeddings,
            freeze_layers,
            lora_rank,
            lora_alpha,
            lora_targets,
            sft,
        },
    };
    let guards = Safeguards {
        overwrite,
        on_nan: choice::<OnNan>("on_nan", on_nan)?,
        ignore_memory_check,
        allow_partial,
        device_memory: None,       // the GPU's is set once it is opened
        dtype: Default::default(), // float32 products: `--dtype bf16` is the CLI's for now
    };
    let observe = Observe {
        plot: match plot {
            "png" => Some(lmforge::plot::Format::Png),
            "svg" => Some(lmforge::plot::Format::Svg),
            "none" => None,
            other => {
                return Err(bad_input(format!(
                    "plot: {other:?}: expected png, svg or none"
                )));
            }
        },
        sample_every_eval,
        eval_choices,
    };
    let cuda = match device {
        "cpu" => false,
        "cuda" => true,
        other => {
            return Err(bad_input(format!(
                "device: {other:?}: expected cpu or cuda"
            )));
        }
    };
    let (out, data, start) = request.start().map_err(|e| crate::errors::to_py(e, None))?;
    lmforge::backend::cpu::init_threads(threads).map_err(|e| crate::errors::to_py(e, None))?;
    let stop = Arc::new(AtomicBool::new(false));
    let (send, records) = channel();
    let (flag, dir) = (stop.clone(), out.clone());
    let thread = std::thread::Builder::new()
        .name("lmforge-train".into())
        .spawn(move || {
            let job = TrainJob {
                data,
                out: dir,
                start,
                progress: !quiet,
                stop: &flag,
                guards,
                observe,
            };
            let mut on_record = |record: &serde_json::Value| {
                let _ = send.send(record.clone()); // nobody listening: the run goes on
            };
            match cuda {
                false => run_on(&lmforge::backend::cpu::Cpu::new(), job, &mut on_record),
                true => lmforge::backend::cuda::Cuda::new().and_then(|gpu| {
                    let mut job = job;
                    job.guards.device_memory = Some(gpu.info().memory_bytes as u64);
                    run_on(&gpu, job, &mut on_record)
                }),
            }
        })
        .map_err(|e| crate::errors::to_py(lmforge::Error::io("<training thread>", e), None))?;
    Ok(Training {
        out,
        records: Mutex::new(records),
        interrupt: Mutex::new(install_interrupt(py, stop.clone())),
        stop,
        thread: Mutex::new(Some(thread)),
        ended: Mutex::new(None),
    })
}

fn run_on<B: Backend>(
    be: &B,
    job: TrainJob,
    on_record: &mut dyn FnMut(&serde_json::Value),
) -> Outcome {
    lmforge::train::train_observed(be, Parallel::single(), job, on_record)
}

/// The summary of a finished run as a dict.
fn summary_dict<'py>(
    py: Python<'py>,
    s: &TrainSummary,
    out: &std::path::Path,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    dict.set_item("out", out)?;
    dict.set_item("step", s.step)?;
    dict.set_item("eval_step", s.eval_step)?;
    dict.set_item("train_loss", s.train_loss)?;
    dict.set_item("val_loss", s.val_loss)?;
    dict.set_item("tokens_per_sec", s.tokens_per_sec)?;
    dict.set_item("interrupted", s.interrupted)?;
    Ok(dict)
}

impl Training {
    /// The next record, `None` once training has ended. Waits with the GIL
    /// released; Ctrl-C (KeyboardInterrupt) stops training at the end of
    /// its step, waits for the checkpoint, and is raised again.
    fn next_record(&self, py: Python<'_>) -> PyResult<Option<serde_json::Value>> {
        loop {
            // The lock is taken without the GIL: a second Python thread
            // waiting here cannot hold up the first.
            let next = py.detach(|| match self.records.lock() {
                Ok(records) => records.recv_timeout(SIGNAL_POLL),
                Err(_) => Err(RecvTimeoutError::Disconnected),
            });
            match next {
                Ok(record) => return Ok(Some(record)),
                Err(RecvTimeoutError::Disconnected) => return Ok(None),
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(interrupt) = py.check_signals() {
                        self.stop.store(true, Ordering::SeqCst);
                        self.join(py)?;
                        return Err(interrupt);
                    }
                }
            }
        }
    }

    /// Wait for the training thread (GIL released) and keep how it ended:
    /// the summary, or the error as the command line words it.
    fn join(&self, py: Python<'_>) -> PyResult<TrainSummary> {
        let handle = self.thread.lock().map_err(poisoned)?.take();
        if let Some(handle) = handle {
            let context = format!("training into {}", self.out.display());
            let ended = match py.detach(|| handle.join()) {
                Ok(Ok(summary)) => Ok(summary),
                Ok(Err(e)) => Err(crate::errors::to_py(e, Some(&context))),
                Err(_) => Err(crate::errors::Error::new_err(format!(
                    "{context}: the training thread panicked"
                ))),
            };
            *self.ended.lock().map_err(poisoned)? = Some(ended);
            if let Some(saved) = self.interrupt.lock().map_err(poisoned)?.take() {
                restore_interrupt(py, saved);
            }
        }
        match self.ended.lock().map_err(poisoned)?.as_ref() {
            Some(Ok(summary)) => Ok(summary.clone()),
            Some(Err(e)) => Err(e.clone_ref(py)),
            None => Err(crate::errors::Error::new_err("training has not ended")),
        }
    }
}

fn poisoned<T>(_: T) -> PyErr {
    crate::errors::Error::new_err("a thread failed while holding the training handle")
}

#[pymethods]
impl Training {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The next metrics record (a dict) as soon as it is written; at the
    /// end of training, the run's error if it failed.
    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        match self.next_record(py)? {
            Some(record) => Ok(Some(to_py(py, &record)?)),
            None => {
                self.join(py)?;
                Ok(None)
            }
        }
    }

    /// Wait for the end of training; returns its summary (a dict).
    fn wait<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        while self.next_record(py)?.is_some() {}
        let summary = self.join(py)?;
        summary_dict(py, &summary, &self.out)
    }

    /// Stop at the end of the current step, with a checkpoint; returns the summary.
    fn stop<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.stop.store(true, Ordering::SeqCst);
        self.wait(py)
    }

    /// Whether training has ended.
    #[getter]
    fn done(&self) -> PyResult<bool> {
        let thread = self.thread.lock().map_err(poisoned)?;
        Ok(thread.as_ref().is_none_or(|t| t.is_finished()))
    }

    /// The run directory.
    #[getter]
    fn out(&self) -> PathBuf {
        self.out.clone()
    }

    fn __repr__(&self) -> String {
        format!("Training(out={:?})", self.out.display().to_string())
    }
}
