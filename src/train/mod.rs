//! The training loop: batches → forward → loss → backward → AdamW, with
//! evaluation, a metrics log, checkpoints, and exact resume.
//!
//! [`train`] runs in four steps, each its own function:
//! 1. plan: the configuration of a new run, or of a resumed one with its
//!    checkpoint and tokenizer, every option checked before any data is read;
//! 2. corpus ([`corpus`]): read or map the data, pick the tokenizer, encode;
//! 3. the run directory ([`run`]): `train_config.json`, `tokenizer.json`,
//!    `metrics.jsonl`;
//! 4. the loop (`Session::run`) over [`Trainer::step`].
//!
//! After `s + 1` updates the loop logs the step, evaluates when
//! `(s + 1) % eval_interval == 0` (and before the first update, and after the
//! last), and checkpoints when `(s + 1) % checkpoint_interval == 0`, at the
//! end, and when asked to stop (Ctrl-C). Every random choice is keyed by the
//! step number, so a run resumed from a checkpoint continues with exactly the
//! losses an uninterrupted run would have had.

mod bench;
pub mod config;
pub mod corpus;
pub mod observe;
pub mod presets;
mod progress;
pub mod run;
pub mod trainer;

pub use bench::{BenchReport, bench};
pub use config::{TrainConfig, TrainOverrides};
pub use observe::Observe;
pub use presets::Preset;
pub use trainer::{Split, Trainer};

use crate::backend::Backend;
use crate::checkpoint::{self, TrainState};
use crate::error::{Error, Result};
use crate::model::ModelConfig;
use crate::tokenizer::{self, Tokenizer};
use observe::Observer;
use progress::Progress;
use run::{Metrics, RunFile};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// A new run, or the continuation of the one in the output directory.
pub enum Start {
    New(TrainConfig),
    /// Continue from the last checkpoint, with the saved configuration changed
    /// by these overrides, applied in order (training options only, e.g. `max_iters`).
    Resume(Vec<TrainOverrides>),
}

/// What to train, where to write it, and how to report.
pub struct TrainJob<'a> {
    /// The corpus; `None` means the built-in demo corpus (or, on resume, the run's own corpus).
    pub data: Option<PathBuf>,
    pub out: PathBuf,
    pub start: Start,
    /// Show a progress bar (on a terminal) or periodic log lines (otherwise).
    pub progress: bool,
    /// Set (e.g. by Ctrl-C) to checkpoint and stop after the current step.
    pub stop: &'a AtomicBool,
    /// What to produce at each evaluation (the loss plot, samples).
    pub observe: Observe,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub step: u64,
    pub train_loss: Option<f32>,
    pub val_loss: Option<f32>,
    /// Mean training throughput of this session.
    pub tokens_per_sec: f64,
    pub interrupted: bool,
}

/// Everything decided before the corpus is read.
struct Plan {
    config: TrainConfig,
    data: Option<PathBuf>,
    /// A resumed run's tokenizer and checkpoint; `None` for a new run.
    resumed: Option<(Box<dyn Tokenizer>, TrainState)>,
}

impl Plan {
    fn new(config: &TrainConfig, data: Option<PathBuf>) -> Result<Self> {
        config.validate()?;
        Ok(Plan {
            config: config.clone(),
            data,
            resumed: None,
        })
    }

    /// The saved run in `out`, changed by `overrides`, with its checkpoint:
    /// refused if an override changes the tokenizer or the model, or if the
    /// run is already as long as asked.
    fn resume(out: &Path, overrides: &[TrainOverrides], data: Option<PathBuf>) -> Result<Self> {
        let run = RunFile::load(out)?;
        let mut config = run.config.clone();
        overrides.iter().for_each(|o| o.apply(&mut config));
        if config.tokenizer != run.config.tokenizer {
            return Err(Error::Config(format!(
                "{}: the run was trained with the {} tokenizer, which cannot change on --resume",
                out.display(),
                run.config.tokenizer
            )));
        }
        config.validate()?;
        let saved = checkpoint::load_config(out)?;
        if (ModelConfig {
            vocab_size: saved.vocab_size,
            ..config.model.clone()
        }) != saved
        {
            return Err(Error::Config(format!(
                "{}: the model options differ from the run being resumed; only training options \
                 (e.g. --max-iters, --lr, --eval-interval) can change on --resume",
                out.display()
            )));
        }
        config.model = saved;
        let n_params = crate::model::ParamLayout::new(&config.model).total;
        let state = checkpoint::load_train_state(out, n_params)?;
        if state.step >= config.max_iters {
            return Err(Error::Config(format!(
                "{} is already trained for {} iterations; pass a larger --max-iters to continue",
                out.display(),
                state.step
            )));
        }
        let tokenizer = tokenizer::load(&out.join(checkpoint::TOKENIZER_FILE))?;
        Ok(Plan {
            config,
            data: data.or(run.data),
            resumed: Some((tokenizer, state)),
        })
    }
}

/// Run (or resume) training on backend `be`. Writes checkpoints and
/// `metrics.jsonl` into `job.out`.
pub fn train<B: Backend>(be: &B, job: TrainJob) -> Result<TrainSummary> {
    let out = job.out.as_path();
    let plan = match &job.start {
        Start::New(config) => Plan::new(config, job.data.clone())?,
        Start::Resume(overrides) => Plan::resume(out, overrides, job.data.clone())?,
    };
    let Plan {
        mut config,
        data,
        resumed,
    } = plan;
    let source = corpus::open(data.as_deref())?;
    let (tokenizer, state) = match resumed {
        Some((tokenizer, state)) => (tokenizer, Some(state)),
        None => (
            corpus::new_tokenizer(&source, &config.tokenizer, data.as_deref())?,
            None,
        ),
    };
    let (corpus, vocab_size) = corpus::tokenize(source, tokenizer.as_ref(), config.val_fraction)?;
    if state.is_some() && vocab_size != config.model.vocab_size {
        return Err(Error::Config(format!(
            "{}: the data needs a vocabulary of {vocab_size} tokens, the run's model has {}",
            out.display(),
            config.model.vocab_size
        )));
    }
    config.model.vocab_size = vocab_size;
    let (train_tokens, val_tokens) = corpus.splits();
    let resumed_at = state.as_ref().map(|s| (s.step, s.elapsed_s));
    let trainer = Trainer::new(be, &config, train_tokens, val_tokens, state)?;
    RunFile::new(data.as_deref(), &config).write(out, tokenizer.as_ref())?;
    let progress = Progress::new(job.progress, trainer.steps_done(), config.max_iters);
    progress.line(format!(
        "{} parameters, vocabulary {}, {} training / {} validation tokens, {} threads",
        trainer.model.num_params(),
        tokenizer.vocab_size(),
        train_tokens.len(),
        val_tokens.len(),
        rayon::current_num_threads()
    ));
    let resumed_step = resumed_at.map(|(step, _)| step);
    let session = Session {
        job: &job,
        metrics: Metrics::open(out, resumed_step)?,
        observer: Observer::new(out, job.observe, tokenizer.as_ref(), resumed_step)?,
        progress,
        started: Instant::now(),
        elapsed_before: resumed_at.map_or(0.0, |(_, elapsed)| elapsed),
        eot_token: tokenizer.eot_token(),
        summary: TrainSummary {
            step: trainer.steps_done(),
            train_loss: None,
            val_loss: None,
            tokens_per_sec: 0.0,
            interrupted: false,
        },
    };
    session.run(trainer)
}

/// One session of training: the loop and what it reports.
struct Session<'j> {
    job: &'j TrainJob<'j>,
    metrics: Metrics,
    observer: Observer<'j>,
    progress: Progress,
    started: Instant,
    /// Training wall time of earlier sessions of this run.
    elapsed_before: f64,
    eot_token: Option<u32>,
    summary: TrainSummary,
}

impl Session<'_> {
    fn elapsed(&self) -> f64 {
        self.elapsed_before + self.started.elapsed().as_secs_f64()
    }

    /// Train and validation loss at `step`, logged and reported.
    fn evaluate<B: Backend>(&mut self, trainer: &mut Trainer<B>, step: u64) -> Result<()> {
        let train_loss = trainer.evaluate(Split::Train, step)?;
        let val_loss = trainer.evaluate(Split::Val, step)?;
        let peak_rss_mb = observe::peak_rss_mb();
        let line = self
            .observer
            .eval_line(step, train_loss, val_loss, peak_rss_mb);
        self.progress.line(line);
        self.summary.train_loss = Some(train_loss);
        self.summary.val_loss = Some(val_loss);
        let elapsed_s = self.elapsed();
        self.metrics.log(serde_json::json!({"step": step, "eval": true, "train_loss": train_loss, "val_loss": val_loss, "elapsed_s": elapsed_s, "peak_rss_mb": peak_rss_mb}))?;
        for warning in self.observer.after_eval(trainer, step) {
            self.progress.line(warning);
        }
        Ok(())
    }

    /// Train to `max_iters` (or until asked to stop), evaluating and
    /// checkpointing on schedule.
    fn run<B: Backend>(mut self, mut trainer: Trainer<B>) -> Result<TrainSummary> {
        let config = trainer.config.clone();
        let start = trainer.steps_done();
        if start == 0 {
            self.evaluate(&mut trainer, 0)?;
        }
        let tokens_per_step =
            (config.batch_size * config.model.block_size * config.grad_accum) as f64;
        let mut trained_time = 0.0;
        for step in start..config.max_iters {
            let lr = config.schedule().at(step);
            let t0 = Instant::now();
            let loss = trainer.step(step)?;
            let dt = t0.elapsed().as_secs_f64();
            trained_time += dt;
            let (done, tokens_per_sec) = (step + 1, tokens_per_step / dt);
            let elapsed_s = self.elapsed();
            self.metrics.log(serde_json::json!({"step": done, "train_loss": loss, "lr": lr, "tokens_per_sec": tokens_per_sec, "elapsed_s": elapsed_s}))?;
            let message = format!("loss {loss:.4} lr {lr:.2e} {tokens_per_sec:.0} tok/s");
            self.progress.step(done, message);
            self.summary.step = done;
            if done % config.eval_interval == 0 || done == config.max_iters {
                self.evaluate(&mut trainer, done)?;
            }
            let stop = self.job.stop.load(Ordering::SeqCst);
            if done % config.checkpoint_interval == 0 || done == config.max_iters || stop {
                trainer.save(&self.job.out, self.elapsed(), self.eot_token)?;
            }
            if stop {
                self.progress.line(format!(
                    "stopped at step {done}; checkpoint saved in {}; continue with --resume",
                    self.job.out.display()
                ));
                self.summary.interrupted = true;
                if let Some(warning) = self.observer.redraw() {
                    self.progress.line(warning);
                }
                break;
            }
        }
        self.progress.finish();
        let steps = (self.summary.step - start) as f64;
        self.summary.tokens_per_sec = tokens_per_step * steps / trained_time.max(1e-9);
        Ok(self.summary)
    }
}
