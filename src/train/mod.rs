//! Training: batches → forward → loss → backward → AdamW, with evaluation,
//! a metrics log, checkpoints, and exact resume.
//!
//! A run goes plan → session:
//! 1. the request ([`request`]): options (the command line's flags, the
//!    Python package's arguments) become a [`Start`]: a new run, a
//!    fine-tune, or a resumption; library callers may build one themselves;
//! 2. the plan ([`plan::resolve`]): one checked [`plan::Plan`] for every
//!    kind of start: the configuration checked once, a checkpoint or a
//!    parent's weights, the corpus ([`corpus`]) and tokenizer, and the
//!    memory check once, against the device that trains;
//! 3. the session ([`session`]): the run directory ([`run`]) and the loop
//!    over [`Trainer::step`], evaluating, logging and checkpointing on
//!    schedule.

mod bench;
pub mod config;
pub mod corpus;
pub mod guard;
pub mod observe;
pub mod plan;
pub mod presets;
mod progress;
pub mod request;
pub mod run;
pub mod session;
pub mod trainer;

pub use bench::{BenchReport, bench};
pub use config::{TrainConfig, TrainOverrides};
pub use guard::{OnNan, Safeguards};
pub use observe::Observe;
pub use presets::Preset;
pub use request::{FineTuneOptions, FineTuneRequest, Start, TrainRequest};
pub use trainer::{Parallel, Split, Trainer};

use crate::backend::Backend;
use crate::error::Result;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

/// Why a fine-tuning step was skipped when its batch held prompt tokens only
/// (the `why` of its `metrics.jsonl` line).
pub const MASKED: &str = "every target masked";

/// What to train, where to write it, and how to report.
pub struct TrainJob<'a> {
    /// The corpus (with `config.sft`: a JSON Lines file of conversations);
    /// `None` means the built-in demo corpus (or, on resume, the run's own corpus).
    pub data: Option<PathBuf>,
    pub out: PathBuf,
    pub start: Start,
    /// Show a progress bar (on a terminal) or periodic log lines (otherwise).
    pub progress: bool,
    /// Set (e.g. by Ctrl-C) to checkpoint and stop after the current step.
    pub stop: &'a AtomicBool,
    /// Overwriting a run, non-finite steps, the memory check.
    pub guards: Safeguards,
    /// What to produce at each evaluation (the loss plot, samples).
    pub observe: Observe,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// The last step taken (where an interrupted run stopped).
    pub step: u64,
    /// The step of the last evaluation, which gave the two losses below:
    /// before `step` when the run was stopped between evaluations.
    pub eval_step: Option<u64>,
    pub train_loss: Option<f32>,
    pub val_loss: Option<f32>,
    /// Mean training throughput of this session.
    pub tokens_per_sec: f64,
    pub interrupted: bool,
}

/// Run (or resume) training on backend `be`. Writes checkpoints and
/// `metrics.jsonl` into `job.out`.
pub fn train<B: Backend>(be: &B, job: TrainJob) -> Result<TrainSummary> {
    train_on(be, Parallel::single(), job)
}

/// [`train`] as one of the ranks of `parallel.world`: every rank reads the
/// corpus and trains; rank 0 alone writes the run directory (the others
/// only read it, to resume), prints progress and saves checkpoints.
pub fn train_on<B: Backend>(be: &B, parallel: Parallel, job: TrainJob) -> Result<TrainSummary> {
    train_observed(be, parallel, job, &mut |_| {})
}

/// [`train_on`], handing `on_record` each record of `metrics.jsonl` as it
/// is written (rank 0): how the Python package streams a run's metrics.
pub fn train_observed<B: Backend>(
    be: &B,
    parallel: Parallel,
    job: TrainJob,
    on_record: &mut dyn FnMut(&serde_json::Value),
) -> Result<TrainSummary> {
    let out = job.out.as_path();
    let root = parallel.world.is_root();
    // One writer per run: held until training ends; it also removes what
    // killed writers left in the run directory.
    let _lock = match root {
        true => Some(crate::rundir::RunLock::acquire(out, "lmforge train")?),
        false => None,
    };
    let new_run = !matches!(job.start, Start::Resume(_));
    if root && new_run && !job.guards.overwrite {
        guard::prepare_new_run(out, false)?; // refuse early, before reading any data
    }
    let plan = plan::resolve(&job.start, job.data.clone(), out, &job.guards)?;
    session::run(be, parallel, plan, &job, on_record)
}
