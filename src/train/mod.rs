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
pub mod guard;
pub mod observe;
pub mod presets;
mod progress;
pub mod request;
pub mod run;
pub mod trainer;

pub use bench::{BenchReport, bench};
pub use config::{TrainConfig, TrainOverrides};
pub use guard::{OnNan, Safeguards};
pub use observe::Observe;
pub use presets::Preset;
pub use request::{FineTuneOptions, TrainRequest};
pub use trainer::{Parallel, Split, Trainer};

use crate::backend::Backend;
use crate::chat::jinja::JinjaTemplate;
use crate::checkpoint::{self, TrainState};
use crate::error::{Error, Result};
use crate::finetune;
use crate::model::ModelConfig;
use crate::tokenizer::{self, Tokenizer};
use observe::Observer;
use progress::Progress;
use run::{Metrics, RunFile};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Why a fine-tuning step was skipped when its batch held prompt tokens only
/// (the `why` of its `metrics.jsonl` line).
pub const MASKED: &str = "every target masked";

/// A new run, a fine-tune of a trained model, or the continuation of the
/// run in the output directory.
pub enum Start {
    New(Box<TrainConfig>),
    FineTune(Box<FineTuneRequest>),
    /// Continue from the last checkpoint, with the saved configuration changed
    /// by these overrides, applied in order (training options only, e.g. `max_iters`).
    Resume(Vec<TrainOverrides>),
}

/// What `train --init-from` asks for.
pub struct FineTuneRequest {
    /// The training options (the `finetune` preset, a TOML file, flags).
    pub config: TrainConfig,
    /// The overrides as given: model-shape flags are refused (the parent decides the shape).
    pub given: TrainOverrides,
    /// A run, a Hugging Face folder, or a model name in the local cache.
    pub init_from: String,
    pub freeze_embeddings: bool,
    pub freeze_layers: usize,
    /// LoRA's settings; no targets means the parent architecture's defaults
    /// ([`crate::model::LoraTarget::defaults`]).
    pub lora: Option<crate::model::LoraConfig>,
}

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
    /// The tokenizer, when it is not made from the corpus (resume, fine-tune).
    tokenizer: Option<Box<dyn Tokenizer>>,
    /// A fine-tune's starting weights.
    start: Option<Vec<f32>>,
    /// A resumed run's checkpoint.
    state: Option<TrainState>,
    /// A fine-tune's parent, whose chat files ([`crate::chat::jinja::CHAT_FILES`]) the run gets.
    parent_dir: Option<PathBuf>,
}

impl Plan {
    fn new(config: &TrainConfig, data: Option<PathBuf>, guards: &Safeguards) -> Result<Self> {
        config.validate()?;
        guard::check_memory(config, guards)?;
        Ok(Plan {
            config: config.clone(),
            data,
            tokenizer: None,
            start: None,
            state: None,
            parent_dir: None,
        })
    }

    /// The saved run in `out`, changed by `overrides`, with its checkpoint:
    /// refused if an override changes the tokenizer or the model, or if the
    /// run is already as long as asked.
    fn resume(
        out: &Path,
        overrides: &[TrainOverrides],
        data: Option<PathBuf>,
        guards: &Safeguards,
    ) -> Result<Self> {
        guard::check_resumable(out)?;
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
        guard::check_memory(&config, guards)?;
        let layout = crate::model::ParamLayout::new(&config.model);
        let lora = config.model.lora.is_some();
        let from = finetune::trainable_from(config.finetune.as_ref(), &layout, lora)?;
        let state = checkpoint::load_train_state(out, layout.total - from)?;
        if state.step >= config.max_iters {
            return Err(Error::Config(format!(
                "{} is already trained for {} iterations; pass a larger --max-iters to continue",
                out.display(),
                state.step
            )));
        }
        let start = match &config.finetune {
            Some(ft) => {
                let parent = finetune::reload_parent(&ft.init_from)?;
                Some(fine_tune_start(&parent, &config)?)
            }
            None => None,
        };
        let tokenizer = tokenizer::load(&out.join(checkpoint::TOKENIZER_FILE))?;
        if let Some(new) = &data {
            warn_if_other_data(out, new, run.data.as_deref());
        }
        Ok(Plan {
            config,
            data: data.or(run.data),
            tokenizer: Some(tokenizer),
            start,
            state: Some(state),
            parent_dir: None,
        })
    }

    /// A fine-tune of the model `req.init_from` names: its shape, its
    /// tokenizer (for conversations on a model without its own
    /// `chat_template`, with lmforge's chat tokens added), its weights.
    fn fine_tune(req: &FineTuneRequest, data: Option<PathBuf>) -> Result<Self> {
        let parent = finetune::load_parent(&req.init_from)?;
        let mut config = fine_tune_config(req, &parent)?;
        let parent_dir = parent.parent.path.clone();
        let own_template = config.sft && JinjaTemplate::load(&parent_dir)?.is_some();
        let grown = match config.sft && !own_template {
            true => Some(
                parent
                    .tokenizer
                    .with_specials(&crate::chat::template::SPECIAL_TOKENS)
                    .map_err(with_bpe_hint)?,
            ),
            false => None,
        };
        let vocab = grown.as_ref().unwrap_or(&parent.tokenizer).vocab_size();
        config.model.vocab_size = config.model.vocab_size.max(vocab);
        config.validate()?;
        let start = fine_tune_start(&parent, &config)?;
        let tokenizer = grown.unwrap_or(parent.tokenizer);
        Ok(Plan {
            config,
            data,
            tokenizer: Some(tokenizer),
            start: Some(start),
            state: None,
            parent_dir: Some(parent_dir),
        })
    }
}

/// The fine-tune's configuration: the parent's model (context and dropout
/// may change) and the requested training options.
fn fine_tune_config(req: &FineTuneRequest, parent: &finetune::Loaded) -> Result<TrainConfig> {
    let g = &req.given;
    let shape_flags = [
        ("--tokenizer", g.tokenizer.is_some()),
        ("--arch", g.arch.is_some()),
        ("--n-layer", g.n_layer.is_some()),
        ("--n-head", g.n_head.is_some()),
        ("--n-embd", g.n_embd.is_some()),
        ("--norm", g.norm.is_some()),
        ("--activation", g.activation.is_some()),
        ("--tie-embeddings", g.tie_embeddings.is_some()),
        ("--bias", g.bias.is_some()),
        ("--qkv-bias", g.qkv_bias.is_some()),
        ("--lm-head-bias", g.lm_head_bias.is_some()),
        ("--n-kv-head", g.n_kv_head.is_some()),
        ("--intermediate-size", g.intermediate_size.is_some()),
        ("--rope-theta", g.rope_theta.is_some()),
    ];
    if let Some((flag, _)) = shape_flags.iter().find(|(_, given)| *given) {
        return Err(Error::Config(format!(
            "{flag} cannot be used with --init-from: a fine-tune keeps its parent's model and \
             tokenizer ({}), whose weights are tied to their shapes and token ids",
            parent.parent.path.display()
        )));
    }
    let mut config = req.config.clone();
    let parent_block = parent.model.config.block_size;
    let block = match g.block_size {
        Some(b) if b > parent_block => {
            return Err(Error::Config(format!(
                "--block {b} is longer than the parent's context of {parent_block} positions"
            )));
        }
        Some(b) => b,
        None => config.model.block_size.min(parent_block),
    };
    let arch = parent.model.config.arch;
    let lora = req.lora.clone().map(|lora| match lora.targets.is_empty() {
        true => crate::model::LoraConfig {
            targets: crate::model::LoraTarget::defaults(arch),
            ..lora
        },
        false => lora,
    });
    config.model = ModelConfig {
        block_size: block,
        dropout: config.model.dropout,
        lora,
        ..parent.model.config.clone()
    };
    config.tokenizer =
        tokenizer::TokenizerSpec::File(parent.parent.path.join(checkpoint::TOKENIZER_FILE));
    config.finetune = Some(finetune::FineTune {
        init_from: parent.parent.clone(),
        freeze_embeddings: req.freeze_embeddings,
        freeze_layers: req.freeze_layers,
    });
    config.model.validate()?; // before it is laid out (LoRA targets of another arch)
    let layout = crate::model::ParamLayout::new(&config.model);
    finetune::trainable_from(config.finetune.as_ref(), &layout, req.lora.is_some())?;
    Ok(config)
}

/// The starting weights of the fine-tune `config` describes.
fn fine_tune_start(parent: &finetune::Loaded, config: &TrainConfig) -> Result<Vec<f32>> {
    let model = crate::model::Model::new(config.model.clone())?;
    finetune::start_params(parent, &model, config.seed)
}

/// A resumed run given `--data` other than what it trained on goes on with
/// the new data (to fine-tune, say), but not without saying so.
fn warn_if_other_data(out: &Path, new: &Path, old: Option<&Path>) {
    let new = std::fs::canonicalize(new).unwrap_or_else(|_| new.to_path_buf());
    if old == Some(new.as_path()) {
        return;
    }
    let old = old.map_or("the built-in demo corpus".to_string(), |p| {
        p.display().to_string()
    });
    crate::diag::warn(format!(
        "{} was trained on {old}; this session continues on {}",
        out.display(),
        new.display()
    ));
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
    let new_run = matches!(job.start, Start::New(_) | Start::FineTune(_));
    // One writer per run: held until training ends; it also removes what
    // killed writers left in the run directory.
    let _lock = match root {
        true => Some(crate::rundir::RunLock::acquire(out, "lmforge train")?),
        false => None,
    };
    if root && new_run && !job.guards.overwrite {
        guard::prepare_new_run(out, false)?; // refuse early, before reading any data
    }
    let plan = match &job.start {
        Start::New(config) => Plan::new(config, job.data.clone(), &job.guards)?,
        Start::FineTune(req) => Plan::fine_tune(req, job.data.clone())?,
        Start::Resume(overrides) => Plan::resume(out, overrides, job.data.clone(), &job.guards)?,
    };
    let Plan {
        mut config,
        data,
        tokenizer,
        start,
        state,
        parent_dir,
    } = plan;
    let chat_dir = parent_dir.as_deref().unwrap_or(out);
    let (corpus, tokenizer) = read_corpus(
        &mut config,
        data.as_deref(),
        tokenizer,
        chat_dir,
        (state.is_some(), job.guards.allow_partial),
    )?;
    guard::check_memory(&config, &job.guards)?;
    let (train_tokens, val_tokens) = corpus.splits();
    let resumed_at = state.as_ref().map(|s| (s.step, s.elapsed_s));
    let splits = (train_tokens, val_tokens);
    let trainer = Trainer::on(be, parallel, &config, splits, start, state)?;
    if root {
        if new_run {
            guard::prepare_new_run(out, job.guards.overwrite)?;
        }
        RunFile::new(data.as_deref(), &config).write(out, tokenizer.as_ref())?;
        if new_run {
            crate::chat::jinja::sync_chat_files(parent_dir.as_deref(), out)?;
        }
    }
    let progress = Progress::new(job.progress && root, trainer.steps_done(), config.max_iters);
    let ranks = parallel.world.size();
    let sizes = (tokenizer.vocab_size(), train_tokens.len(), val_tokens.len());
    announce(&progress, parallel, &config, &trainer, sizes);
    let resumed_step = resumed_at.map(|(step, _)| step);
    let session = Session {
        job: &job,
        on_record,
        metrics: match root {
            true => Some(Metrics::open(out, resumed_step)?),
            false => None,
        },
        observer: match root {
            true => Some(Observer::new(
                out,
                job.observe.clone(),
                tokenizer.as_ref(),
                resumed_step,
            )?),
            false => None,
        },
        ranks,
        progress,
        started: Instant::now(),
        elapsed_before: resumed_at.map_or(0.0, |(_, elapsed)| elapsed),
        eot_token: tokenizer.eot_token(),
        last_checkpoint: resumed_at.map(|(step, _)| step),
        skipped_in_a_row: 0,
        masked_steps: 0,
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

/// The run's first lines: the ranks (when several), the model and the data.
fn announce<B: Backend>(
    progress: &Progress,
    parallel: Parallel,
    config: &TrainConfig,
    trainer: &Trainer<B>,
    (vocab_size, train_tokens, val_tokens): (usize, usize, usize),
) {
    let ranks = parallel.world.size();
    if ranks > 1 {
        let zero = match parallel.zero {
            true => ", AdamW moments sharded (ZeRO-1)",
            false => "",
        };
        progress.line(format!(
            "{ranks} ranks x batch {} x grad-accum {} = {} sequences per step{zero}",
            config.batch_size,
            config.grad_accum,
            ranks * config.batch_size * config.grad_accum
        ));
    }
    progress.line(format!(
        "{} parameters ({} trained), vocabulary {vocab_size}, {train_tokens} training / \
         {val_tokens} validation tokens, {} threads",
        trainer.model.num_params(),
        trainer.trained_params(),
        rayon::current_num_threads()
    ));
}

/// Read and encode the corpus (conversations with `config.sft`, in the chat
/// format of `chat_dir`), with the given tokenizer or one made for it; sets
/// a new run's vocabulary size.
fn read_corpus(
    config: &mut TrainConfig,
    data: Option<&Path>,
    tokenizer: Option<Box<dyn Tokenizer>>,
    chat_dir: &Path,
    (resumed, allow_partial): (bool, bool),
) -> Result<(corpus::Corpus, Box<dyn Tokenizer>)> {
    if config.sft {
        let path = data.ok_or_else(|| Error::Config("--sft needs a JSON Lines file".into()))?;
        let tokenizer = tokenizer.ok_or_else(|| {
            Error::Config("--sft fine-tunes a trained model: give --init-from".into())
        })?;
        let block = config.model.block_size;
        let corpus = corpus::conversations(
            path,
            tokenizer.as_ref(),
            chat_dir,
            config.val_fraction,
            block,
        )?;
        return Ok((corpus, tokenizer));
    }
    let source = corpus::open(data)?;
    guard::check_finished(&source, data, allow_partial)?;
    let fixed_vocab = tokenizer.is_some();
    let tokenizer = match tokenizer {
        Some(t) => t,
        None => corpus::new_tokenizer(&source, config, data)?,
    };
    let (corpus, vocab_size) = corpus::tokenize(source, tokenizer.as_ref(), config.val_fraction)?;
    if (resumed || fixed_vocab) && vocab_size > config.model.vocab_size {
        return Err(Error::Config(format!(
            "the data needs a vocabulary of {vocab_size} tokens, the model has {}",
            config.model.vocab_size
        )));
    }
    if !fixed_vocab {
        config.model.vocab_size = vocab_size;
    }
    Ok((corpus, tokenizer))
}

/// One session of training: the loop and what it reports.
struct Session<'j> {
    job: &'j TrainJob<'j>,
    /// Told each metrics record (see [`train_observed`]).
    on_record: &'j mut dyn FnMut(&serde_json::Value),
    /// The metrics log and the reports (rank 0's; `None` on other ranks).
    metrics: Option<Metrics>,
    observer: Option<Observer<'j>>,
    /// Ranks training together (each step trains on all their batches).
    ranks: usize,
    progress: Progress,
    started: Instant,
    /// Training wall time of earlier sessions of this run.
    elapsed_before: f64,
    eot_token: Option<u32>,
    /// The step of the last checkpoint on disk (this session's or the resumed one).
    last_checkpoint: Option<u64>,
    /// Non-finite steps dropped in a row (`--on-nan skip`).
    skipped_in_a_row: u32,
    /// Steps of this session whose batch had every target masked (`--sft`).
    masked_steps: u64,
    summary: TrainSummary,
}

impl Session<'_> {
    fn log(&mut self, line: serde_json::Value) -> Result<()> {
        match &mut self.metrics {
            Some(metrics) => {
                (self.on_record)(&line);
                metrics.log(line)
            }
            None => Ok(()),
        }
    }

    fn elapsed(&self) -> f64 {
        self.elapsed_before + self.started.elapsed().as_secs_f64()
    }

    /// Train and validation loss at `step`, logged and reported.
    fn evaluate<B: Backend>(&mut self, trainer: &mut Trainer<B>, step: u64) -> Result<()> {
        let train_loss = trainer.evaluate(Split::Train, step)?;
        let val_loss = trainer.evaluate(Split::Val, step)?;
        if !(train_loss.is_finite() && val_loss.is_finite()) {
            let why = format!("the evaluation gave train loss {train_loss}, val loss {val_loss}");
            let skipping = self.job.guards.on_nan == OnNan::Skip;
            let (out, last) = (&self.job.out, self.last_checkpoint);
            return Err(guard::stopped_at(step, &why, out, last, skipping));
        }
        let peak_rss_mb = observe::peak_rss_mb();
        let mut acc_norm = None;
        if let Some(observer) = &mut self.observer {
            acc_norm = observer.acc_norm(trainer)?;
            let mut line = observer.eval_line(step, train_loss, val_loss, peak_rss_mb);
            if let Some(acc) = acc_norm {
                line.push_str(&format!(", acc_norm {acc:.4}"));
            }
            self.progress.line(line);
        }
        self.summary.train_loss = Some(train_loss);
        self.summary.val_loss = Some(val_loss);
        let elapsed_s = self.elapsed();
        let mut line = serde_json::json!({"step": step, "eval": true, "train_loss": train_loss, "val_loss": val_loss, "elapsed_s": elapsed_s, "peak_rss_mb": peak_rss_mb});
        if let Some(acc) = acc_norm {
            line["acc_norm"] = acc.into();
        }
        self.log(line)?;
        let warnings = match &mut self.observer {
            Some(observer) => observer.after_eval(trainer, step),
            None => Vec::new(),
        };
        for warning in warnings {
            self.progress.line(warning);
        }
        Ok(())
    }

    /// A step whose loss or gradient norm is not finite (the trainer made no
    /// update): stop with an error, or with `--on-nan skip` log it and go
    /// on, unless too many came in a row.
    fn drop_step(&mut self, done: u64, why: &str, lr: f32) -> Result<()> {
        let out = &self.job.out;
        if self.job.guards.on_nan == OnNan::Stop {
            return Err(guard::stopped_at(
                done,
                why,
                out,
                self.last_checkpoint,
                false,
            ));
        }
        self.skipped_in_a_row += 1;
        if self.skipped_in_a_row > guard::MAX_SKIPPED_IN_A_ROW {
            let why = format!("{why}, {} steps in a row", self.skipped_in_a_row);
            return Err(guard::stopped_at(
                done,
                &why,
                out,
                self.last_checkpoint,
                true,
            ));
        }
        self.progress
            .line(format!("step {done}: {why}: step dropped (--on-nan skip)"));
        self.log(serde_json::json!({"step": done, "skipped": true, "why": why, "lr": lr}))
    }

    /// A fine-tuning step whose batch held prompt tokens only: every target
    /// masked, so no loss to log and no update made. Said the first time,
    /// counted at the end, logged as skipped each time.
    fn masked_step(&mut self, done: u64, lr: f32) -> Result<()> {
        if self.masked_steps == 0 {
            self.progress.line(format!(
                "step {done}: every target of the batch is masked (prompt tokens only): \
                 no loss, no update; such steps are logged as skipped"
            ));
        }
        self.masked_steps += 1;
        self.log(serde_json::json!({"step": done, "skipped": true, "why": MASKED, "lr": lr}))
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
            (config.batch_size * config.model.block_size * config.grad_accum * self.ranks) as f64;
        let mut trained_time = 0.0;
        for step in start..config.max_iters {
            let lr = config.schedule().at(step);
            let t0 = Instant::now();
            let loss = trainer.step(step)?;
            let dt = t0.elapsed().as_secs_f64();
            trained_time += dt;
            let (done, tokens_per_sec) = (step + 1, tokens_per_step / dt);
            let elapsed_s = self.elapsed();
            match guard::non_finite(loss, trainer.last_grad_norm) {
                None if trainer.last_targets == 0 => self.masked_step(done, lr)?,
                None => {
                    self.skipped_in_a_row = 0;
                    let mut line = serde_json::json!({"step": done, "train_loss": loss, "lr": lr, "tokens_per_sec": tokens_per_sec, "elapsed_s": elapsed_s});
                    if self.ranks > 1 {
                        line["comm_s"] = trainer.last_comm_s.into();
                    }
                    self.log(line)?;
                    let message = format!("loss {loss:.4} lr {lr:.2e} {tokens_per_sec:.0} tok/s");
                    self.progress.step(done, message);
                }
                Some(why) => self.drop_step(done, &why, lr)?,
            }
            self.summary.step = done;
            if done % config.eval_interval == 0 || done == config.max_iters {
                self.evaluate(&mut trainer, done)?;
            }
            let stop = trainer.any_rank(self.job.stop.load(Ordering::SeqCst))?;
            if done % config.checkpoint_interval == 0 || done == config.max_iters || stop {
                trainer.save(&self.job.out, self.elapsed(), self.eot_token)?;
                self.last_checkpoint = Some(done);
            }
            if stop {
                self.progress.line(format!(
                    "stopped at step {done}; checkpoint saved in {}; continue with --resume",
                    self.job.out.display()
                ));
                self.summary.interrupted = true;
                if let Some(warning) = self.observer.as_mut().and_then(|o| o.redraw()) {
                    self.progress.line(warning);
                }
                break;
            }
        }
        if self.masked_steps > 0 {
            self.progress.line(format!(
                "{} of {} steps had every target masked (no reply token in the batch) and made \
                 no update; a longer --block or shorter prompts put replies in more batches",
                self.masked_steps,
                self.summary.step - start
            ));
        }
        self.progress.finish();
        let steps = (self.summary.step - start) as f64;
        self.summary.tokens_per_sec = tokens_per_step * steps / trained_time.max(1e-9);
        Ok(self.summary)
    }
}

/// `err` (a tokenizer that cannot take the chat tokens) with the way to a
/// chatbot: a BPE trained with the chat tokens, pretrained, then `--sft`.
fn with_bpe_hint(err: Error) -> Error {
    let err = match err {
        Error::Config(message) => message,
        other => other.to_string(),
    };
    let specials = crate::chat::template::SPECIAL_TOKENS.join("' --special '");
    Error::Config(format!(
        "{err}. To chat with a model trained from scratch, give it a BPE with the chat tokens: \
         `lmforge tokenizer train --vocab-size 2048 --special '<|endoftext|>' --special '{specials}' \
         --out tok.json TEXT`, pretrain with `lmforge train --tokenizer tok.json --out base`, then \
         `lmforge train --init-from base --sft chats.jsonl --out chatbot` (or start from GPT-2: --tokenizer gpt2)"
    ))
}
