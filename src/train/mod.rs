//! The training loop: batches → forward → loss → backward → AdamW, with
//! evaluation, a metrics log, checkpoints, and exact resume.
//!
//! Update `s` (counting from 0) uses training batch `s` and the learning rate
//! `schedule(s)`. After `s + 1` updates the loop logs the step, evaluates when
//! `(s + 1) % eval_interval == 0` (and before the first update, and after the
//! last), and checkpoints when `(s + 1) % checkpoint_interval == 0`, at the
//! end, and when asked to stop (Ctrl-C). Every random choice is keyed by the
//! step number, so a run resumed from a checkpoint continues with exactly the
//! losses an uninterrupted run would have had.

pub mod config;

use crate::checkpoint;
use crate::data::TokenSource;
use crate::data::sampler::BatchSampler;
use crate::data::shards::ShardSet;
use crate::data::text;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic_bytes;
use crate::model::{Activations, Mode, Model};
use crate::optim::AdamW;
use crate::rng::mix64;
use crate::tokenizer::{self, CharTokenizer, Tokenizer, TokenizerSpec};
pub use config::{TrainConfig, TrainOverrides};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// `train_config.json`: what was trained on, and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunFile {
    /// The corpus (absolute path), or `None` for the built-in demo corpus.
    pub data: Option<PathBuf>,
    pub config: TrainConfig,
}

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

const STREAM_TRAIN: u64 = 1;
const STREAM_EVAL_TRAIN: u64 = 2;
const STREAM_EVAL_VAL: u64 = 3;

/// The corpus text, from `data` or the built-in demo corpus.
fn load_text(data: Option<&Path>) -> Result<String> {
    match data {
        Some(path) => text::read_corpus(path),
        None => Ok(text::demo_corpus()),
    }
}

/// What `--data` points at, before tokenization.
enum Source {
    /// A text file, a directory of `.txt` files, or the demo corpus.
    Text(String),
    /// Token shards from `lmforge prepare`, nanoGPT or llm.c, memory-mapped.
    Shards(ShardSet),
}

/// The training and validation tokens.
enum Corpus {
    /// Encoded text in memory: the head trains, the tail validates.
    Text {
        train: Vec<u32>,
        val: Vec<u32>,
    },
    Shards(ShardSet),
}

impl Corpus {
    fn splits(&self) -> (&dyn TokenSource, &dyn TokenSource) {
        match self {
            Corpus::Text { train, val } => (train, val),
            Corpus::Shards(set) => (set.train(), set.val()),
        }
    }
}

/// A directory of token shards (rather than of `.txt` files): it has a
/// `manifest.json` (lmforge), a `train.bin` (nanoGPT) or `*_train_*.bin` files (llm.c).
fn is_shard_dir(dir: &Path) -> bool {
    dir.join("manifest.json").is_file()
        || dir.join("train.bin").is_file()
        || std::fs::read_dir(dir).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.contains("_train_") && name.ends_with(".bin")
            })
        })
}

fn open_source(data: Option<&Path>) -> Result<Source> {
    match data {
        Some(dir) if dir.is_dir() && is_shard_dir(dir) => Ok(Source::Shards(ShardSet::open(dir)?)),
        _ => Ok(Source::Text(load_text(data)?)),
    }
}

/// The tokenizer of a new run: the shards' own, a character vocabulary of the
/// text, or the one `spec` names.
fn new_tokenizer(
    source: &Source,
    spec: &TokenizerSpec,
    data: Option<&Path>,
) -> Result<Box<dyn Tokenizer>> {
    match source {
        Source::Shards(set) => match set.tokenizer_path() {
            Some(path) => tokenizer::load(path),
            None if *spec == TokenizerSpec::Char => Err(Error::Config(format!(
                "{}: these shards carry no tokenizer.json (nanoGPT or llm.c layout); \
                 pass --tokenizer gpt2 or --tokenizer PATH to say which made them",
                data.map(|d| d.display().to_string()).unwrap_or_default()
            ))),
            None => spec.load(),
        },
        Source::Text(text) if *spec == TokenizerSpec::Char => {
            Ok(Box::new(CharTokenizer::from_text(text)?))
        }
        Source::Text(_) => spec.load(),
    }
}

/// Split tokens into the head (train) and the tail (validation).
fn split(tokens: Vec<u32>, val_fraction: f64) -> (Vec<u32>, Vec<u32>) {
    let n_val = ((tokens.len() as f64) * val_fraction).round() as usize;
    let mut train = tokens;
    let val = train.split_off(train.len() - n_val.min(train.len()));
    (train, val)
}

/// Keep only the metrics lines of steps up to `step` (those a checkpoint covers).
fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= step)
        })
        .map(|line| format!("{line}\n"))
        .collect();
    write_atomic_bytes(path, kept.as_bytes())
}

struct Trainer<'a> {
    model: Model,
    config: TrainConfig,
    params: Vec<f32>,
    grads: Vec<f32>,
    opt: AdamW,
    acts: Activations,
    inputs: Vec<u32>,
    targets: Vec<u32>,
    train: BatchSampler<'a>,
    val: BatchSampler<'a>,
    dropout_seed: u64,
}

impl<'a> Trainer<'a> {
    /// Buffers for training `model` from `params` and optimizer state `opt`.
    fn new(
        model: Model,
        config: &TrainConfig,
        params: Vec<f32>,
        opt: AdamW,
        train: BatchSampler<'a>,
        val: BatchSampler<'a>,
    ) -> Self {
        let (b, t) = (config.batch_size, config.block_size);
        Trainer {
            grads: vec![0.0; model.num_params()],
            acts: model.activations(b, t),
            inputs: vec![0; b * t],
            targets: vec![0; b * t],
            dropout_seed: mix64(config.seed ^ 0xD50F),
            model,
            config: config.clone(),
            params,
            opt,
            train,
            val,
        }
    }

    /// Token ids come from files (shards made elsewhere may hold anything):
    /// an id the model has no embedding for is an error, not a crash.
    fn check_token_ids(&self) -> Result<()> {
        let v = self.model.config.vocab_size;
        match self
            .inputs
            .iter()
            .chain(&self.targets)
            .find(|&&id| id as usize >= v)
        {
            Some(id) => Err(Error::Data(format!(
                "token id {id} in the data is outside the vocabulary of {v} tokens"
            ))),
            None => Ok(()),
        }
    }

    /// One optimizer update (with gradient accumulation); returns the mean loss.
    fn step(&mut self, step: u64) -> Result<f32> {
        crate::backend::cpu::on_pool(|| self.step_on_pool(step))
    }

    fn step_on_pool(&mut self, step: u64) -> Result<f32> {
        let cfg = &self.config;
        let (b, t, accum) = (cfg.batch_size, cfg.block_size, cfg.grad_accum);
        self.grads
            .par_chunks_mut(1 << 16)
            .for_each(|chunk| chunk.fill(0.0));
        let dloss = 1.0 / (b * t * accum) as f32;
        let mut loss = 0.0;
        for micro in 0..accum {
            self.train.fill(
                STREAM_TRAIN + (micro as u64) * 16,
                step,
                &mut self.inputs,
                &mut self.targets,
            );
            self.check_token_ids()?;
            let mode = Mode::Train {
                seed: self.dropout_seed,
                step_key: step * accum as u64 + micro as u64,
            };
            self.model
                .forward(&self.params, &mut self.acts, &self.inputs, b, t, mode);
            loss += self.model.backward(
                &self.params,
                &mut self.grads,
                &mut self.acts,
                &self.inputs,
                &self.targets,
                b,
                t,
                mode,
                dloss,
            );
        }
        let lr = cfg.schedule().at(step);
        self.opt
            .update(&mut self.params, &self.grads, lr, cfg.grad_clip);
        Ok(loss / accum as f32)
    }

    /// Mean loss over `eval_iters` batches of one split, dropout off.
    fn evaluate(&mut self, val: bool, step: u64) -> Result<f32> {
        crate::backend::cpu::on_pool(|| self.evaluate_on_pool(val, step))
    }

    fn evaluate_on_pool(&mut self, val: bool, step: u64) -> Result<f32> {
        let (b, t) = (self.config.batch_size, self.config.block_size);
        let (sampler, stream) = if val {
            (&self.val, STREAM_EVAL_VAL)
        } else {
            (&self.train, STREAM_EVAL_TRAIN)
        };
        let mut total = 0.0f64;
        for i in 0..self.config.eval_iters {
            sampler.fill(
                stream,
                step * self.config.eval_iters + i,
                &mut self.inputs,
                &mut self.targets,
            );
            self.check_token_ids()?;
            self.model
                .forward(&self.params, &mut self.acts, &self.inputs, b, t, Mode::Eval);
            total += self.model.loss(&mut self.acts, &self.targets) as f64;
        }
        Ok((total / self.config.eval_iters as f64) as f32)
    }

    fn save(&self, out: &Path, step: u64, elapsed_s: f64, eot_token: Option<u32>) -> Result<()> {
        checkpoint::save_model(out, &self.model, &self.params, eot_token)?;
        checkpoint::save_train_state(out, step, elapsed_s, &self.params, &self.opt.m, &self.opt.v)
    }
}

/// Progress output: a bar on a terminal, plain lines otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    enabled: bool,
    every: u64,
}

impl Progress {
    fn new(enabled: bool, start: u64, total: u64) -> Self {
        use std::io::IsTerminal;
        let bar = (enabled && std::io::stderr().is_terminal()).then(|| {
            let bar = indicatif::ProgressBar::new(total).with_position(start);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
                )
                .expect("valid template"),
            );
            bar
        });
        Progress {
            bar,
            enabled,
            every: (total / 20).max(1),
        }
    }

    fn step(&self, step: u64, message: String) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(step);
                bar.set_message(message);
            }
            None if self.enabled && step % self.every == 0 => eprintln!("step {step}: {message}"),
            None => {}
        }
    }

    fn line(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None if self.enabled => eprintln!("{line}"),
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.abandon();
        }
    }
}

/// Run (or resume) training. Writes checkpoints and `metrics.jsonl` into `job.out`.
pub fn train(job: TrainJob) -> Result<TrainSummary> {
    let out = job.out.as_path();
    let resume = matches!(job.start, Start::Resume(_));
    let (data, config, tokenizer, source) = match &job.start {
        Start::Resume(overrides) => {
            let run_path = out.join(checkpoint::TRAIN_CONFIG_FILE);
            let run_text =
                std::fs::read_to_string(&run_path).map_err(|e| Error::io(&run_path, e))?;
            let run: RunFile = serde_json::from_str(&run_text)
                .map_err(|e| Error::format(&run_path, e.to_string()))?;
            let changed = |o: &TrainOverrides| {
                o.tokenizer
                    .as_ref()
                    .is_some_and(|t| *t != run.config.tokenizer)
            };
            if overrides.iter().any(changed) {
                return Err(Error::Config(format!(
                    "{}: the run was trained with the {} tokenizer, which cannot change on --resume",
                    out.display(),
                    run.config.tokenizer
                )));
            }
            let mut config = run.config;
            overrides.iter().for_each(|o| o.apply(&mut config));
            let tokenizer = tokenizer::load(&out.join(checkpoint::TOKENIZER_FILE))?;
            let data = job.data.clone().or(run.data);
            let source = open_source(data.as_deref())?;
            (data, config, tokenizer, source)
        }
        Start::New(config) => {
            let source = open_source(job.data.as_deref())?;
            let tokenizer = new_tokenizer(&source, &config.tokenizer, job.data.as_deref())?;
            (job.data.clone(), config.clone(), tokenizer, source)
        }
    };
    config.validate()?;
    let (corpus, vocab_size) = match source {
        Source::Text(text) => {
            let tokens = tokenizer.encode_parallel(&text, rayon::current_num_threads())?;
            let (train, val) = split(tokens, config.val_fraction);
            (Corpus::Text { train, val }, tokenizer.vocab_size())
        }
        Source::Shards(set) => {
            let vocab = tokenizer.vocab_size().max(set.vocab_size().unwrap_or(0));
            (Corpus::Shards(set), vocab)
        }
    };
    let (train_tokens, val_tokens) = corpus.splits();

    let model = Model::new(config.model_config(vocab_size))?;
    let (b, t) = (config.batch_size, config.block_size);
    let train_sampler = BatchSampler::new(train_tokens, b, t, config.seed, "training")?;
    let val_sampler = BatchSampler::new(val_tokens, b, t, config.seed, "validation")?;
    let mut opt = AdamW::new(config.adamw(), &model.layout.tensors);
    let (params, start, elapsed_before) = if resume {
        let (saved_model, _) = checkpoint::load_model(out)?;
        if saved_model.config != model.config {
            return Err(Error::Config(format!(
                "{}: the model options differ from the run being resumed; only training options \
                 (e.g. --max-iters, --lr, --eval-interval) can change on --resume",
                out.display()
            )));
        }
        let st = checkpoint::load_train_state(out, model.num_params())?;
        opt.m = st.m;
        opt.v = st.v;
        opt.step = st.step;
        (st.params, st.step, st.elapsed_s)
    } else {
        (model.init_params(config.seed), 0, 0.0)
    };
    if start >= config.max_iters {
        return Err(Error::Config(format!(
            "{} is already trained for {start} iterations; pass a larger --max-iters to continue",
            out.display()
        )));
    }

    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let data_abs = data
        .as_ref()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()));
    let run = RunFile {
        data: data_abs,
        config: config.clone(),
    };
    write_atomic_bytes(
        &out.join(checkpoint::TRAIN_CONFIG_FILE),
        &serde_json::to_vec_pretty(&run).expect("serialises"),
    )?;
    tokenizer.save(&out.join(checkpoint::TOKENIZER_FILE))?;
    let metrics_path = out.join("metrics.jsonl");
    if resume {
        truncate_metrics(&metrics_path, start)?;
    } else if metrics_path.exists() {
        std::fs::remove_file(&metrics_path).map_err(|e| Error::io(&metrics_path, e))?;
    }
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .map_err(|e| Error::io(&metrics_path, e))?;
    let mut log = |value: serde_json::Value| -> Result<()> {
        writeln!(metrics, "{value}").map_err(|e| Error::io(&metrics_path, e))
    };

    let num_params = model.num_params();
    let mut trainer = Trainer::new(model, &config, params, opt, train_sampler, val_sampler);

    let progress = Progress::new(job.progress, start, config.max_iters);
    progress.line(format!(
        "{} parameters, vocabulary {}, {} training / {} validation tokens, {} threads",
        num_params,
        tokenizer.vocab_size(),
        train_tokens.len(),
        val_tokens.len(),
        rayon::current_num_threads()
    ));
    let session = Instant::now();
    let elapsed = |session: &Instant| elapsed_before + session.elapsed().as_secs_f64();
    let mut summary = TrainSummary {
        step: start,
        train_loss: None,
        val_loss: None,
        tokens_per_sec: 0.0,
        interrupted: false,
    };
    let evaluate = |trainer: &mut Trainer,
                    step: u64,
                    summary: &mut TrainSummary,
                    log: &mut dyn FnMut(serde_json::Value) -> Result<()>| {
        let train_loss = trainer.evaluate(false, step)?;
        let val_loss = trainer.evaluate(true, step)?;
        progress.line(format!(
            "step {step}: train loss {train_loss:.4}, val loss {val_loss:.4}"
        ));
        summary.train_loss = Some(train_loss);
        summary.val_loss = Some(val_loss);
        log(
            serde_json::json!({"step": step, "eval": true, "train_loss": train_loss, "val_loss": val_loss, "elapsed_s": elapsed(&session)}),
        )
    };
    if start == 0 {
        evaluate(&mut trainer, 0, &mut summary, &mut log)?;
    }
    let tokens_per_step = (b * t * config.grad_accum) as f64;
    let mut trained_time = 0.0;
    for step in start..config.max_iters {
        let lr = config.schedule().at(step);
        let t0 = Instant::now();
        let loss = trainer.step(step)?;
        let dt = t0.elapsed().as_secs_f64();
        trained_time += dt;
        let done = step + 1;
        let tokens_per_sec = tokens_per_step / dt;
        log(
            serde_json::json!({"step": done, "train_loss": loss, "lr": lr, "tokens_per_sec": tokens_per_sec, "elapsed_s": elapsed(&session)}),
        )?;
        progress.step(
            done,
            format!("loss {loss:.4} lr {lr:.2e} {:.0} tok/s", tokens_per_sec),
        );
        summary.step = done;
        if done % config.eval_interval == 0 || done == config.max_iters {
            evaluate(&mut trainer, done, &mut summary, &mut log)?;
        }
        let stop = job.stop.load(Ordering::SeqCst);
        if done % config.checkpoint_interval == 0 || done == config.max_iters || stop {
            trainer.save(out, done, elapsed(&session), tokenizer.eot_token())?;
        }
        if stop {
            progress.line(format!(
                "stopped at step {done}; checkpoint saved in {}; continue with --resume",
                out.display()
            ));
            summary.interrupted = true;
            break;
        }
    }
    progress.finish();
    summary.tokens_per_sec =
        tokens_per_step * (summary.step - start) as f64 / trained_time.max(1e-9);
    Ok(summary)
}

/// Speed of full training steps (forward, backward, AdamW) on random tokens.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub num_params: usize,
    /// Median over the timed steps.
    pub tokens_per_sec: f64,
    pub step_ms: f64,
    /// Peak resident memory of the process (Linux), in MiB.
    pub peak_rss_mib: Option<f64>,
}

/// Time `steps` training steps after `warmup` untimed ones, for the model in
/// `config` with a vocabulary of `vocab_size` tokens.
pub fn bench(
    config: &TrainConfig,
    vocab_size: usize,
    warmup: u64,
    steps: u64,
) -> Result<BenchReport> {
    config.validate()?;
    if steps == 0 {
        return Err(Error::Config("--steps must be at least 1".into()));
    }
    let model = Model::new(config.model_config(vocab_size))?;
    let mut rng = crate::rng::Rng::new(config.seed, 77);
    let tokens: Vec<u32> = (0..(config.block_size + 1) * 64)
        .map(|_| rng.below(vocab_size as u64) as u32)
        .collect();
    let (b, t) = (config.batch_size, config.block_size);
    let train = BatchSampler::new(&tokens, b, t, config.seed, "synthetic")?;
    let val = BatchSampler::new(&tokens, b, t, config.seed, "synthetic")?;
    let params = model.init_params(config.seed);
    let opt = AdamW::new(config.adamw(), &model.layout.tensors);
    let num_params = model.num_params();
    let mut trainer = Trainer::new(model, config, params, opt, train, val);
    let mut times = Vec::with_capacity(steps as usize);
    for step in 0..warmup + steps {
        let t0 = Instant::now();
        trainer.step(step)?;
        if step >= warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    Ok(BenchReport {
        num_params,
        tokens_per_sec: (b * t * config.grad_accum) as f64 / median,
        step_ms: median * 1e3,
        peak_rss_mib: peak_rss_mib(),
    })
}

/// `VmHWM` from `/proc/self/status`: the most resident memory the process has used.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
