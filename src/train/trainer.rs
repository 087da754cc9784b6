//! One model being trained: its buffers on the backend and the two things
//! done with them, a training step and an evaluation.
//!
//! Update `s` (counting from 0) uses training batch `s` and the learning
//! rate `schedule(s)`. Every random choice (the batch windows, the dropout
//! masks) is keyed by the step number, so a step redone after a resume
//! draws exactly what it drew the first time.

use super::config::TrainConfig;
use crate::backend::{Backend, IGNORE_TARGET};
use crate::checkpoint::{self, TrainState};
use crate::data::TokenSource;
use crate::data::sampler::BatchSampler;
use crate::error::{Error, Result};
use crate::finetune::sft::PROMPT_BIT;
use crate::model::{Activations, Grads, Mode, Model, Window};
use crate::optim::AdamW;
use crate::rng::mix64;
use std::path::Path;

const STREAM_TRAIN: u64 = 1;
const STREAM_EVAL_TRAIN: u64 = 2;
const STREAM_EVAL_VAL: u64 = 3;

/// Conversations mark the targets the loss skips (see
/// [`crate::finetune::sft`]): clear the mark from the inputs, turn marked
/// targets into [`IGNORE_TARGET`]. Returns the number of counted targets.
fn unmark_prompts(sft: bool, inputs: &mut [u32], targets: &mut [u32]) -> usize {
    if !sft {
        return targets.len();
    }
    inputs.iter_mut().for_each(|id| *id &= !PROMPT_BIT);
    let mut counted = 0;
    for id in targets.iter_mut() {
        if *id & PROMPT_BIT != 0 {
            *id = IGNORE_TARGET;
        } else {
            counted += 1;
        }
    }
    counted
}

/// Which split an evaluation reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
}

/// The model, its parameters, gradients, optimizer state and activations,
/// all allocated once, and the batch samplers of both splits.
pub struct Trainer<'a, B: Backend> {
    be: &'a B,
    pub model: Model,
    pub config: TrainConfig,
    params: B::Buf,
    grads: Grads<B>,
    opt: AdamW<B>,
    acts: Activations<B>,
    inputs: Vec<u32>,
    targets: Vec<u32>,
    train: BatchSampler<'a>,
    val: BatchSampler<'a>,
    dropout_seed: u64,
    /// The last step's gradient norm before clipping; NaN when its loss was
    /// not finite. A non-finite step makes no update (see [`Trainer::step`]).
    pub last_grad_norm: f32,
}

impl<'a, B: Backend> Trainer<'a, B> {
    /// Start training `config.model` (its vocabulary size set) from
    /// `start` (a fine-tune's starting weights; `None`: fresh weights seeded
    /// by `config.seed`), continued from `resumed` if given: its parameters
    /// replace the trained ones (all, or a fine-tune's unfrozen tail).
    pub fn new(
        be: &'a B,
        config: &TrainConfig,
        (train, val): (&'a dyn TokenSource, &'a dyn TokenSource),
        start: Option<Vec<f32>>,
        resumed: Option<TrainState>,
    ) -> Result<Self> {
        let model = Model::new(config.model.clone())?;
        let (b, t, seed) = (config.batch_size, config.model.block_size, config.seed);
        let train = BatchSampler::new(train, b, t, seed, "training")?;
        let val = BatchSampler::new(val, b, t, seed, "validation")?;
        let (adamw, tensors) = (config.adamw(), &model.layout.tensors);
        let lora = config.model.lora.is_some();
        let from = crate::finetune::trainable_from(config.finetune.as_ref(), &model.layout, lora)?;
        let mut params = start.unwrap_or_else(|| model.init_params(seed));
        let opt = match resumed {
            Some(state) => {
                if state.params.len() != params.len() - from {
                    return Err(Error::Data(format!(
                        "the checkpoint holds {} trained parameters, this run trains {}",
                        state.params.len(),
                        params.len() - from
                    )));
                }
                params[from..].copy_from_slice(&state.params);
                AdamW::from_state(be, adamw, tensors, from, (state.m, state.v), state.step)?
            }
            None => AdamW::new(be, adamw, tensors, from)?,
        };
        let params = be.upload(params)?;
        Ok(Trainer {
            be,
            grads: Grads::new(be, from, model.num_params())?,
            acts: Activations::training(be, &model.config, b, t)?,
            inputs: vec![0; b * t],
            targets: vec![0; b * t],
            dropout_seed: mix64(seed ^ 0xD50F),
            last_grad_norm: 0.0,
            params,
            opt,
            model,
            config: config.clone(),
            train,
            val,
        })
    }

    /// Parameters the optimizer updates (all, or a fine-tune's unfrozen ones).
    pub fn trained_params(&self) -> usize {
        self.model.num_params() - self.grads.from
    }

    /// The backend the buffers live on.
    pub fn backend(&self) -> &'a B {
        self.be
    }

    /// The parameters as they are now (for sampling at an evaluation).
    pub fn params(&self) -> &B::Buf {
        &self.params
    }

    /// Updates applied so far (the step a resumed run continues from).
    pub fn steps_done(&self) -> u64 {
        self.opt.step
    }

    /// Token ids come from files (shards made elsewhere may hold anything):
    /// an id the model has no embedding for is an error, not a crash.
    fn check_token_ids(&self) -> Result<()> {
        let v = self.model.config.vocab_size;
        match self
            .inputs
            .iter()
            .chain(&self.targets)
            .find(|&&id| id as usize >= v && id != IGNORE_TARGET)
        {
            Some(id) => Err(Error::Data(format!(
                "token id {id} in the data is outside the vocabulary of {v} tokens"
            ))),
            None => Ok(()),
        }
    }

    /// One optimizer update (with gradient accumulation); returns the mean
    /// loss. A step whose loss or gradient norm is NaN or infinite changes
    /// no weight and no moment (it still counts as a step): the caller sees
    /// it in the loss and [`Trainer::last_grad_norm`] and decides.
    pub fn step(&mut self, step: u64) -> Result<f32> {
        let be = self.be;
        be.run(|| self.step_here(step))
    }

    fn step_here(&mut self, step: u64) -> Result<f32> {
        let (be, cfg) = (self.be, &self.config);
        let (b, t, accum) = (cfg.batch_size, cfg.model.block_size, cfg.grad_accum);
        let window = Window::batch(b, t);
        let n = B::len(&self.grads.buf);
        be.fill(B::view_mut(&mut self.grads.buf, 0..n), 0.0);
        let mut loss = 0.0;
        for micro in 0..accum as u64 {
            let stream = STREAM_TRAIN + micro * 16;
            self.train
                .fill(stream, step, &mut self.inputs, &mut self.targets);
            // Each micro-batch's mean loss weighs 1 / accum (b * t counted targets in pretraining).
            let counted = unmark_prompts(cfg.sft, &mut self.inputs, &mut self.targets).max(1);
            let dloss = 1.0 / (counted * accum) as f32;
            self.check_token_ids()?;
            let mode = Mode::Train {
                seed: self.dropout_seed,
                step_key: step * accum as u64 + micro,
            };
            let (model, params, acts) = (&self.model, &self.params, &mut self.acts);
            model.forward(be, params, acts, &self.inputs, window, mode);
            let grads = &mut self.grads;
            loss += model.backward(be, params, grads, acts, &self.targets, window, mode, dloss);
        }
        let (lr, loss) = (cfg.schedule().at(step), loss / accum as f32);
        self.last_grad_norm = if loss.is_finite() {
            self.opt
                .update(be, &mut self.params, &self.grads.buf, lr, cfg.grad_clip)
        } else {
            self.opt.skip();
            f32::NAN
        };
        Ok(loss)
    }

    /// Mean loss over `eval_iters` batches of one split, dropout off.
    pub fn evaluate(&mut self, split: Split, step: u64) -> Result<f32> {
        let be = self.be;
        be.run(|| self.evaluate_here(split, step))
    }

    fn evaluate_here(&mut self, split: Split, step: u64) -> Result<f32> {
        let (be, iters) = (self.be, self.config.eval_iters);
        let window = Window::batch(self.config.batch_size, self.config.model.block_size);
        let (sampler, stream) = match split {
            Split::Train => (&self.train, STREAM_EVAL_TRAIN),
            Split::Val => (&self.val, STREAM_EVAL_VAL),
        };
        let mut total = 0.0f64;
        for i in 0..iters {
            sampler.fill(
                stream,
                step * iters + i,
                &mut self.inputs,
                &mut self.targets,
            );
            unmark_prompts(self.config.sft, &mut self.inputs, &mut self.targets);
            self.check_token_ids()?;
            let (model, acts) = (&self.model, &mut self.acts);
            model.forward(be, &self.params, acts, &self.inputs, window, Mode::Eval);
            total += model.loss(be, acts, &self.targets, window) as f64;
        }
        Ok((total / iters as f64) as f32)
    }

    /// Write the model files (a LoRA run: its adapters) and the training
    /// state (the trained parameters) into the run directory `out`.
    pub fn save(&self, out: &Path, elapsed_s: f64, eot_token: Option<u32>) -> Result<()> {
        let (be, n, from) = (self.be, self.model.num_params(), self.grads.from);
        let moments = |buf| B::view(buf, 0..n - from);
        be.on_host(B::view(&self.params, 0..n), |params| {
            match (&self.config.finetune, self.model.config.lora.is_some()) {
                (Some(ft), true) => {
                    let parent = &ft.init_from.path;
                    crate::finetune::adapters::save_adapters(
                        out,
                        &self.model,
                        params,
                        parent,
                        eot_token,
                    )?
                }
                _ => checkpoint::save_model(out, &self.model, params, eot_token)?,
            }
            be.on_host(moments(&self.opt.m), |m| {
                be.on_host(moments(&self.opt.v), |v| {
                    let trained = &params[from..];
                    checkpoint::save_train_state(out, self.opt.step, elapsed_s, trained, m, v)
                })
            })
        })
    }
}
