//! One model being trained: its buffers on the backend and the two things
//! done with them, a training step and an evaluation.
//!
//! Update `s` (counting from 0) uses training batch `s` and the learning
//! rate `schedule(s)`. Every random choice (the batch windows, the dropout
//! masks) is keyed by the step number, so a step redone after a resume
//! draws exactly what it drew the first time.

use super::config::TrainConfig;
use crate::backend::Backend;
use crate::checkpoint::{self, TrainState};
use crate::data::TokenSource;
use crate::data::sampler::BatchSampler;
use crate::error::{Error, Result};
use crate::model::{Activations, Mode, Model, Window};
use crate::optim::AdamW;
use crate::rng::mix64;
use std::path::Path;

const STREAM_TRAIN: u64 = 1;
const STREAM_EVAL_TRAIN: u64 = 2;
const STREAM_EVAL_VAL: u64 = 3;

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
    grads: B::Buf,
    opt: AdamW<B>,
    acts: Activations<B>,
    inputs: Vec<u32>,
    targets: Vec<u32>,
    train: BatchSampler<'a>,
    val: BatchSampler<'a>,
    dropout_seed: u64,
}

impl<'a, B: Backend> Trainer<'a, B> {
    /// Start training `config.model` (its vocabulary size set) from
    /// `resumed`, or from fresh weights (seeded by `config.seed`).
    pub fn new(
        be: &'a B,
        config: &TrainConfig,
        train: &'a dyn TokenSource,
        val: &'a dyn TokenSource,
        resumed: Option<TrainState>,
    ) -> Result<Self> {
        let model = Model::new(config.model.clone())?;
        let (b, t, seed) = (config.batch_size, config.model.block_size, config.seed);
        let train = BatchSampler::new(train, b, t, seed, "training")?;
        let val = BatchSampler::new(val, b, t, seed, "validation")?;
        let adamw = config.adamw();
        let (params, opt) = match resumed {
            Some(state) => {
                let moments = (state.m, state.v);
                let opt = AdamW::from_state(be, adamw, &model.layout.tensors, moments, state.step)?;
                (be.upload(state.params)?, opt)
            }
            None => (
                be.upload(model.init_params(seed))?,
                AdamW::new(be, adamw, &model.layout.tensors)?,
            ),
        };
        Ok(Trainer {
            be,
            grads: be.zeros(model.num_params())?,
            acts: Activations::training(be, &model.config, b, t)?,
            inputs: vec![0; b * t],
            targets: vec![0; b * t],
            dropout_seed: mix64(seed ^ 0xD50F),
            params,
            opt,
            model,
            config: config.clone(),
            train,
            val,
        })
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
            .find(|&&id| id as usize >= v)
        {
            Some(id) => Err(Error::Data(format!(
                "token id {id} in the data is outside the vocabulary of {v} tokens"
            ))),
            None => Ok(()),
        }
    }

    /// One optimizer update (with gradient accumulation); returns the mean loss.
    pub fn step(&mut self, step: u64) -> Result<f32> {
        let be = self.be;
        be.run(|| self.step_here(step))
    }

    fn step_here(&mut self, step: u64) -> Result<f32> {
        let (be, cfg) = (self.be, &self.config);
        let (b, t, accum) = (cfg.batch_size, cfg.model.block_size, cfg.grad_accum);
        let window = Window::batch(b, t);
        let n = self.model.num_params();
        be.fill(B::view_mut(&mut self.grads, 0..n), 0.0);
        let dloss = 1.0 / (b * t * accum) as f32;
        let mut loss = 0.0;
        for micro in 0..accum as u64 {
            let stream = STREAM_TRAIN + micro * 16;
            self.train
                .fill(stream, step, &mut self.inputs, &mut self.targets);
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
        let lr = cfg.schedule().at(step);
        self.opt
            .update(be, &mut self.params, &self.grads, lr, cfg.grad_clip);
        Ok(loss / accum as f32)
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
            self.check_token_ids()?;
            let (model, acts) = (&self.model, &mut self.acts);
            model.forward(be, &self.params, acts, &self.inputs, window, Mode::Eval);
            total += model.loss(be, acts, &self.targets, window) as f64;
        }
        Ok((total / iters as f64) as f32)
    }

    /// Write the model files and the training state into the run directory `out`.
    pub fn save(&self, out: &Path, elapsed_s: f64, eot_token: Option<u32>) -> Result<()> {
        let (be, n) = (self.be, self.model.num_params());
        let all = |buf| B::view(buf, 0..n);
        be.on_host(all(&self.params), |params| {
            checkpoint::save_model(out, &self.model, params, eot_token)?;
            be.on_host(all(&self.opt.m), |m| {
                be.on_host(all(&self.opt.v), |v| {
                    checkpoint::save_train_state(out, self.opt.step, elapsed_s, params, m, v)
                })
            })
        })
    }
}
