//! A training session: the loop over [`Trainer::step`] that a [`Plan`]
//! sets up, with evaluation, the metrics log, checkpoints and progress.
//!
//! After `s + 1` updates the loop logs the step, evaluates when
//! `(s + 1) % eval_interval == 0` (and before the first update, and after the
//! last), and checkpoints when `(s + 1) % checkpoint_interval == 0`, at the
//! end, and when asked to stop (Ctrl-C). Every random choice is keyed by the
//! step number, so a run resumed from a checkpoint continues with exactly the
//! losses an uninterrupted run would have had.

use super::observe::{self, Observer};
use super::plan::Plan;
use super::progress::Progress;
use super::run::{Metrics, RunFile};
use super::{MASKED, OnNan, Parallel, Split, TrainConfig, TrainJob, TrainSummary, Trainer, guard};
use crate::backend::Backend;
use crate::error::Result;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Train `plan` on backend `be`: write the run directory (rank 0), then run
/// the loop; `on_record` is handed each record of `metrics.jsonl`.
pub fn run<B: Backend>(
    be: &B,
    parallel: Parallel,
    plan: Plan,
    job: &TrainJob,
    on_record: &mut dyn FnMut(&serde_json::Value),
) -> Result<TrainSummary> {
    let Plan {
        config,
        data,
        corpus,
        tokenizer,
        weights,
        state,
        parent_dir,
    } = plan;
    let (out, root) = (job.out.as_path(), parallel.world.is_root());
    let new_run = state.is_none();
    let (train_tokens, val_tokens) = corpus.splits();
    let resumed_at = state.as_ref().map(|s| (s.step, s.elapsed_s));
    let splits = (train_tokens, val_tokens);
    let trainer = Trainer::on(be, parallel, &config, splits, weights, state)?;
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
        job,
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
            eval_step: None,
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

/// One session of training: the loop and what it reports.
struct Session<'j> {
    job: &'j TrainJob<'j>,
    /// Told each metrics record (see [`super::train_observed`]).
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
        self.summary.eval_step = Some(step);
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
