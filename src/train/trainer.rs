//! One model being trained: its buffers on the backend and the two things
//! done with them, a training step and an evaluation.
//!
//! Update `s` (counting from 0) uses training batch `s` and the learning
//! rate `schedule(s)`. Every random choice (the batch windows, the dropout
//! masks) is keyed by the step number, so a step redone after a resume
//! draws exactly what it drew the first time.
//!
//! Data parallel ([`crate::dist`]): with `N` ranks and `--grad-accum A`,
//! a step is `N x A` micro-batches; rank `r` computes micro-batches
//! `g = a N + r` (`a < A`), each with the windows, the dropout masks and the
//! loss weight `1 / (A N x targets)` that micro-batch `g` has in one rank's
//! run with `--grad-accum N A`. Each micro-batch's gradient is computed into
//! a zeroed buffer and then added, on one rank as across ranks, so 2 ranks
//! give the bits of 1 rank with twice the accumulation (a sum of two numbers
//! does not depend on their order); more terms are summed in another order
//! and agree to rounding.

use super::config::TrainConfig;
use crate::backend::{Backend, IGNORE_TARGET};
use crate::checkpoint::{self, TrainState};
use crate::data::TokenSource;
use crate::data::sampler::BatchSampler;
use crate::dist::{Shards, World};
use crate::error::{Error, Result};
use crate::finetune::sft::PROMPT_BIT;
use crate::model::{Activations, Grads, Mode, Model, PackedWeights, Weights, Window};
use crate::optim::AdamW;
use crate::rng::mix64;
use std::path::Path;
use std::time::Instant;

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

/// An SFT evaluation with no reply token in any of its batches has no loss
/// to report: say so rather than log a made-up number.
fn every_eval_target_masked(split: Split, batches: u64, window: Window) -> Error {
    let name = match split {
        Split::Train => "training",
        Split::Val => "validation",
    };
    Error::Data(format!(
        "every target of the {batches} {name} evaluation batches ({} x {} tokens) was masked: \
         the conversations there have no reply token inside a window, so there is no loss to \
         measure; use a larger --block, shorter conversations, or more --eval-iters",
        window.b, window.t
    ))
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
    /// The matrices the forward products read, when the backend keeps them
    /// in another type (`--dtype bf16`): rewritten from `params` after every
    /// update, which changes only `params` (the f32 masters).
    products_copy: Option<PackedWeights<B>>,
    grads: Grads<B>,
    opt: AdamW<B>,
    acts: Activations<B>,
    inputs: Vec<u32>,
    targets: Vec<u32>,
    train: BatchSampler<'a>,
    val: BatchSampler<'a>,
    dropout_seed: u64,
    /// The ranks training together, and this rank's part.
    parallel: Parallel<'a>,
    /// A second gradient buffer: the gradient of one micro-batch when
    /// several are added (`--grad-accum` > 1), the sum sent to the other
    /// ranks, the weights gathered from them (ZeRO-1).
    scratch: Option<Grads<B>>,
    /// The trained parameters' shards (ZeRO-1: AdamW holds this rank's only).
    shards: Shards,
    /// The gradient norm's partial sums of every rank (ZeRO-1).
    norm_partials: Vec<f64>,
    /// Seconds the last step spent in the collectives moving gradients and
    /// weights (waiting for slower ranks included); 0 on one rank.
    pub last_comm_s: f64,
    /// The last step's gradient norm before clipping; NaN when its loss was
    /// not finite. A non-finite step makes no update (see [`Trainer::step`]).
    pub last_grad_norm: f32,
    /// The targets the last step's loss counted, over all its micro-batches
    /// and ranks. 0 when fine-tuning on conversations drew only prompt
    /// tokens (every target masked): that step has no loss and makes no update.
    pub last_targets: u64,
}

/// How a trainer shares its work: the world of ranks, and whether AdamW's
/// moments are sharded across them (ZeRO-1).
#[derive(Clone, Copy)]
pub struct Parallel<'a> {
    pub world: &'a World,
    pub zero: bool,
}

impl Parallel<'static> {
    /// One process, nothing sharded.
    pub fn single() -> Self {
        Parallel {
            world: World::single(),
            zero: false,
        }
    }
}

impl<'a, B: Backend> Trainer<'a, B> {
    /// [`Trainer::on`] in one process.
    pub fn new(
        be: &'a B,
        config: &TrainConfig,
        splits: (&'a dyn TokenSource, &'a dyn TokenSource),
        start: Option<Vec<f32>>,
        resumed: Option<TrainState>,
    ) -> Result<Self> {
        Self::on(be, Parallel::single(), config, splits, start, resumed)
    }

    /// Start training `config.model` (its vocabulary size set) from
    /// `start` (a fine-tune's starting weights; `None`: fresh weights seeded
    /// by `config.seed`), continued from `resumed` if given: its parameters
    /// replace the trained ones (all, or a fine-tune's unfrozen tail).
    pub fn on(
        be: &'a B,
        parallel: Parallel<'a>,
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
        let trained = params.len() - from;
        let world = parallel.world;
        let shards = Shards::new(trained, world.size())?;
        let shard = match parallel.zero {
            true => shards.ranges[world.rank()].clone(),
            false => 0..trained,
        };
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
                let layout = (&tensors[..], from, shard);
                AdamW::from_state(be, adamw, layout, (state.m, state.v), state.step)?
            }
            None => AdamW::sharded(be, adamw, tensors, from, shard)?,
        };
        let needs_scratch = config.grad_accum > 1 || world.size() > 1;
        let scratch = match needs_scratch {
            true => Some(Grads::new(be, from, model.num_params())?),
            false => None,
        };
        let params = be.upload(params)?;
        let products_copy = PackedWeights::for_training(be, &model, &params)?;
        Ok(Trainer {
            be,
            grads: Grads::new(be, from, model.num_params())?,
            acts: Activations::training(be, &model.config, b, t)?,
            inputs: vec![0; b * t],
            targets: vec![0; b * t],
            dropout_seed: mix64(seed ^ 0xD50F),
            last_grad_norm: 0.0,
            last_targets: 0,
            last_comm_s: 0.0,
            parallel,
            scratch,
            norm_partials: vec![0.0; shards.chunks()],
            shards,
            params,
            products_copy,
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
    /// it in the loss and [`Trainer::last_grad_norm`] and decides. So does a
    /// step with no target to learn from ([`Trainer::last_targets`] 0; its
    /// loss is 0 and means nothing).
    pub fn step(&mut self, step: u64) -> Result<f32> {
        let be = self.be;
        be.run(|| self.step_here(step))
    }

    fn step_here(&mut self, step: u64) -> Result<f32> {
        let (accum, world) = (self.config.grad_accum, self.parallel.world);
        let (ranks, rank) = (world.size(), world.rank());
        let mut loss = 0.0;
        self.last_targets = 0;
        for micro in 0..accum {
            let g = (micro * ranks + rank) as u64;
            // A rank alone sums in the gradients: its first micro-batch goes
            // there, the others into scratch and are added. Ranks sum in
            // scratch (what they send): the first goes there, the others into
            // the gradients and are added to it.
            let into_scratch = (micro > 0) == (ranks == 1);
            loss += self.micro_step(step, g, into_scratch)?;
            if micro > 0 {
                self.add_micro_gradient();
            }
        }
        let total = (accum * ranks) as f32;
        let loss = match ranks {
            1 => loss / total,
            _ => {
                // The target count rides along (exact below 2^24; only 0 matters).
                let (mut sum, mine) = ([0.0f32; 2], [loss, self.last_targets as f32]);
                world.all_reduce_sum(&mine, &mut sum, "loss all-reduce")?;
                self.last_targets = sum[1] as u64;
                sum[0] / total
            }
        };
        let (lr, clip) = (self.config.schedule().at(step), self.config.grad_clip);
        self.last_grad_norm = if !loss.is_finite() {
            self.opt.skip();
            f32::NAN
        } else if self.last_targets == 0 {
            self.opt.skip();
            0.0
        } else if ranks == 1 {
            let be = self.be;
            let grads = &self.grads.buf;
            self.opt.update(be, &mut self.params, grads, lr, clip)
        } else if self.parallel.zero {
            self.zero_update(lr, clip)?
        } else {
            let started = Instant::now();
            self.all_reduce_gradients()?;
            self.last_comm_s = started.elapsed().as_secs_f64();
            let be = self.be;
            self.opt
                .update(be, &mut self.params, &self.grads.buf, lr, clip)
        };
        let updated = loss.is_finite() && self.last_targets > 0;
        if let Some(copy) = self.products_copy.as_mut().filter(|_| updated) {
            copy.refresh(self.be, &self.params)?;
        }
        Ok(loss)
    }

    /// Forward and backward of micro-batch `g` of `step` (counting over all
    /// ranks), its gradient written into zeroed scratch or the zeroed
    /// gradients; returns its mean loss.
    fn micro_step(&mut self, step: u64, g: u64, into_scratch: bool) -> Result<f32> {
        let (be, cfg) = (self.be, &self.config);
        let (b, t) = (cfg.batch_size, cfg.model.block_size);
        let total = (cfg.grad_accum * self.parallel.world.size()) as u64;
        self.train.fill(
            STREAM_TRAIN + g * 16,
            step,
            &mut self.inputs,
            &mut self.targets,
        );
        // Each micro-batch's mean loss weighs 1 / total (b * t counted targets in pretraining).
        let counted = unmark_prompts(cfg.sft, &mut self.inputs, &mut self.targets);
        self.last_targets += counted as u64;
        let dloss = 1.0 / (counted.max(1) as u64 * total) as f32;
        self.check_token_ids()?;
        let mode = Mode::Train {
            seed: self.dropout_seed,
            step_key: step * total + g,
        };
        let grads = match (into_scratch, self.scratch.as_mut()) {
            (true, Some(scratch)) => scratch,
            _ => &mut self.grads,
        };
        let n = B::len(&grads.buf);
        be.fill(B::view_mut(&mut grads.buf, 0..n), 0.0);
        let (window, model, params) = (Window::batch(b, t), &self.model, &self.params);
        let weights = Weights::packed(params, self.products_copy.as_ref());
        model.forward_with(be, weights, &mut self.acts, &self.inputs, window, mode);
        let acts = &mut self.acts;
        Ok(model.backward(be, params, grads, acts, &self.targets, window, mode, dloss))
    }

    /// Add the micro-batch gradient just computed to the sum kept in the
    /// other buffer (a rank alone sums in the gradients, ranks in scratch).
    fn add_micro_gradient(&mut self) {
        let Some(scratch) = self.scratch.as_mut() else {
            return;
        };
        let n = B::len(&scratch.buf);
        let (sum, term) = match self.parallel.world.size() {
            1 => (&mut self.grads.buf, &scratch.buf),
            _ => (&mut scratch.buf, &self.grads.buf),
        };
        self.be
            .residual(B::view_mut(sum, 0..n), B::view(term, 0..n), None);
    }

    /// `x` summed over the ranks.
    fn sum_over_ranks(&self, x: f32, what: &str) -> Result<f32> {
        let mut sum = [0.0f32];
        self.parallel.world.all_reduce_sum(&[x], &mut sum, what)?;
        Ok(sum[0])
    }

    /// Whether `flag` is set on any rank (a stop asked for on one node stops all).
    pub fn any_rank(&self, flag: bool) -> Result<bool> {
        let world = self.parallel.world;
        if world.size() == 1 {
            return Ok(flag);
        }
        Ok(self.sum_over_ranks(flag as u8 as f32, "stop-flag all-reduce")? > 0.0)
    }

    /// The gradients summed over the ranks: this rank's sum (in scratch)
    /// all-reduced into the gradients.
    fn all_reduce_gradients(&mut self) -> Result<()> {
        let (be, world) = (self.be, self.parallel.world);
        let scratch = self.scratch.as_ref().expect("ranks keep scratch");
        let n = B::len(&scratch.buf);
        be.on_host(B::view(&scratch.buf, 0..n), |send| {
            be.on_host_mut(B::view_mut(&mut self.grads.buf, 0..n), |recv| {
                world.all_reduce_sum(send, recv, "gradient all-reduce")
            })
        })
    }

    /// ZeRO-1: reduce-scatter the gradients (this rank's shard of the sum
    /// lands in its part of the gradients), update the shard with the
    /// global norm, all-gather the weights. Returns the norm.
    fn zero_update(&mut self, lr: f32, clip: f32) -> Result<f32> {
        let (be, world) = (self.be, self.parallel.world);
        let shard = self.shards.ranges[world.rank()].clone();
        let (from, n) = (self.grads.from, self.shards.len());
        let scratch = &mut self.scratch.as_mut().expect("ranks keep scratch").buf;
        let started = Instant::now();
        be.on_host(B::view(scratch, 0..n), |send| {
            be.on_host_mut(B::view_mut(&mut self.grads.buf, shard.clone()), |recv| {
                world.reduce_scatter_sum(send, recv, &self.shards, "gradient reduce-scatter")
            })
        })?;
        let mine = self
            .opt
            .sum_of_squares(be, B::view(&self.grads.buf, shard.clone()));
        let s = &self.shards;
        let parts = (&s.chunk_counts[..], &s.chunk_displs[..]);
        world.all_gather(
            mine,
            &mut self.norm_partials,
            parts,
            "gradient-norm all-gather",
        )?;
        let mut comm_s = started.elapsed().as_secs_f64();
        let norm = crate::backend::norm_of(&self.norm_partials);
        let params = B::view_mut(&mut self.params, from + shard.start..from + shard.end);
        let grads = B::view(&self.grads.buf, shard.clone());
        self.opt.apply(be, params, grads, (lr, clip), norm);
        let parts = (&s.counts[..], &s.displs[..]);
        let mine = B::view(&self.params, from + shard.start..from + shard.end);
        let started = Instant::now();
        be.on_host(mine, |send| {
            be.on_host_mut(B::view_mut(scratch, 0..n), |recv| {
                world.all_gather(send, recv, parts, "weight all-gather")
            })
        })?;
        comm_s += started.elapsed().as_secs_f64();
        self.last_comm_s = comm_s;
        be.copy(
            B::view_mut(&mut self.params, from..from + n),
            B::view(scratch, 0..n),
        );
        Ok(norm)
    }

    /// Mean loss per counted target over `eval_iters` batches of one split,
    /// dropout off. Each batch weighs by the targets it counts, so an SFT
    /// batch whose targets are all masked adds nothing (not a loss of 0).
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
        let (ranks, rank) = (
            self.parallel.world.size() as u64,
            self.parallel.world.rank() as u64,
        );
        // [sum of per-target losses, counted targets]
        let mut sums = [0.0f64; 2];
        for i in 0..iters {
            let index = (step * iters + i) * ranks + rank;
            sampler.fill(stream, index, &mut self.inputs, &mut self.targets);
            let counted = unmark_prompts(self.config.sft, &mut self.inputs, &mut self.targets);
            self.check_token_ids()?;
            let (model, acts) = (&self.model, &mut self.acts);
            let weights = Weights::packed(&self.params, self.products_copy.as_ref());
            model.forward_with(be, weights, acts, &self.inputs, window, Mode::Eval);
            let mean = model.loss(be, acts, &self.targets, window) as f64;
            sums[0] += mean * counted as f64;
            sums[1] += counted as f64;
        }
        if ranks > 1 {
            let mut total = [0.0f64; 2];
            let what = "evaluation all-reduce";
            self.parallel
                .world
                .all_reduce_sum_f64(&sums, &mut total, what)?;
            sums = total;
        }
        if sums[1] == 0.0 {
            return Err(every_eval_target_masked(split, iters * ranks, window));
        }
        Ok((sums[0] / sums[1]) as f32)
    }

    /// Write the model files (a LoRA run: its adapters) and the training
    /// state (the trained parameters) into the run directory `out`: on rank
    /// 0 only, after gathering the moments' shards there under ZeRO-1 (every
    /// rank calls this), so the files are those of one rank's run.
    pub fn save(&self, out: &Path, elapsed_s: f64, eot_token: Option<u32>) -> Result<()> {
        let (be, world) = (self.be, self.parallel.world);
        if !self.parallel.zero || world.size() == 1 {
            let n = self.shards.len();
            return match world.is_root() {
                true => be.on_host(B::view(&self.opt.m, 0..n), |m| {
                    be.on_host(B::view(&self.opt.v, 0..n), |v| {
                        self.write(out, (m, v), elapsed_s, eot_token)
                    })
                }),
                false => Ok(()),
            };
        }
        let m = self.gather_to_root(&self.opt.m, "moment gather")?;
        let v = self.gather_to_root(&self.opt.v, "moment gather")?;
        match (m, v) {
            (Some(m), Some(v)) => self.write(out, (&m, &v), elapsed_s, eot_token),
            _ => Ok(()),
        }
    }

    /// A moment's shards gathered whole on rank 0 (`None` on the others).
    fn gather_to_root(&self, shard: &B::Buf, what: &str) -> Result<Option<Vec<f32>>> {
        let (be, world) = (self.be, self.parallel.world);
        let mut whole = world.is_root().then(|| vec![0.0f32; self.shards.len()]);
        let len = self.opt.shard.len();
        be.on_host(B::view(shard, 0..len), |send| {
            world.gather_to_root(send, whole.as_deref_mut(), &self.shards, what)
        })?;
        Ok(whole)
    }

    fn write(
        &self,
        out: &Path,
        (m, v): (&[f32], &[f32]),
        elapsed_s: f64,
        eot: Option<u32>,
    ) -> Result<()> {
        let (be, n, from) = (self.be, self.model.num_params(), self.grads.from);
        be.on_host(B::view(&self.params, 0..n), |params| {
            match (&self.config.finetune, self.model.config.lora.is_some()) {
                (Some(ft), true) => {
                    let parent = &ft.init_from.path;
                    crate::finetune::adapters::save_adapters(out, &self.model, params, parent, eot)?
                }
                _ => checkpoint::save_model(out, &self.model, params, eot)?,
            }
            let trained = &params[from..];
            checkpoint::save_train_state(out, self.opt.step, elapsed_s, trained, m, v)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::{Cpu, Dtype};
    use crate::train::Preset;

    /// The logits of the trainer's last batch, the matrices read from its
    /// bf16 copy (`copy`) or converted from the f32 masters at each product.
    fn logits(trainer: &mut Trainer<Cpu>, copy: bool) -> Vec<f32> {
        let (b, t) = (trainer.config.batch_size, trainer.config.model.block_size);
        let window = Window::batch(b, t);
        let copy = trainer.products_copy.as_ref().filter(|_| copy);
        let weights = Weights::packed(&trainer.params, copy);
        let (be, acts) = (trainer.be, &mut trainer.acts);
        let model = &trainer.model;
        model.forward_with(be, weights, acts, &trainer.inputs, window, Mode::Eval);
        acts.tensors.logits.at(0, window.rows()).to_vec()
    }

    /// With `--dtype bf16` the forward products read a bf16 copy that every
    /// update rewrites: through it the model computes, bit for bit, what
    /// converting the updated f32 masters at each product computes. Without
    /// the rewrite the copy would still hold the first weights.
    #[test]
    fn the_bf16_copy_follows_every_update() {
        let mut config = Preset::CharCpu.config();
        (config.model.vocab_size, config.batch_size) = (65, 2);
        let tokens: Vec<u32> = (0..4000u32).map(|i| i * 7 % 65).collect();
        let be = Cpu::with_dtype(Dtype::Bf16);
        let mut trainer = Trainer::new(&be, &config, (&tokens, &tokens), None, None).unwrap();
        assert!(trainer.products_copy.is_some());
        trainer.step(0).unwrap();
        let first = logits(&mut trainer, true);
        assert!(first == logits(&mut trainer, false));
        trainer.step(1).unwrap();
        let second = logits(&mut trainer, true);
        assert!(second == logits(&mut trainer, false));
        assert!(first != second, "the update changed nothing");
        let f32_products = Cpu::new();
        let trainer = Trainer::new(&f32_products, &config, (&tokens, &tokens), None, None).unwrap();
        assert!(trainer.products_copy.is_none());
    }
}
