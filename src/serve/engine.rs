//! The decoding engine: one thread per served model that generates for every
//! request at once (continuous batching, as vLLM and llama.cpp's server do).
//!
//! ```text
//! loop:
//!   admit waiting jobs while a slot is free:
//!       prefill:  forward over the prompt into the slot's own KV cache,
//!                 sample the first token from its last logits
//!   decode step:  one Model::forward_batch over the last token of every
//!                 active sequence (the weights are read once for all of
//!                 them), then sample each row with that request's options
//!   a sequence leaves when it draws a stop token, reaches max_tokens or the
//!   context, or its client has gone (its event channel is closed)
//! ```
//!
//! On the CPU, decoding one token is bound by reading the weights from
//! memory, so a step over 8 sequences costs little more than over one.
//! Each slot's KV cache ([`Activations::inference`]) is allocated once at
//! start; a finished sequence gives its slot to the next job.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::{Activations, Mode, Model, Window};
use crate::rng::Rng;
use crate::sample::{Finish, SampleOptions, Sampler};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use tokio::sync::mpsc::UnboundedSender;

/// The random stream request sampling draws from (with the request's seed).
const SERVE_STREAM: u64 = 0x5E7E;

/// What the engine tells a request's handler.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The next token of the reply.
    Token(u32),
    /// The reply ended ([`Finish::Length`] also at the end of the context).
    Done(Finish),
    /// The model failed (e.g. non-finite logits); the reply ends.
    Failed(String),
}

/// One request for the engine.
pub struct Job {
    /// At least one token, at most the context.
    pub prompt: Vec<u32>,
    /// Sampling options (`max_new_tokens`, `temperature`, `top_p`, `seed`;
    /// stop strings are the handler's business).
    pub opts: SampleOptions,
    pub stop_tokens: Vec<u32>,
    /// Where the tokens go; a closed channel means the client has gone.
    pub events: UnboundedSender<Event>,
}

/// Counters the HTTP side reads for `/health`.
#[derive(Debug, Default)]
pub struct Load {
    /// Jobs sent to the engine and not yet admitted.
    pub queued: AtomicUsize,
    /// Sequences decoding now.
    pub active: AtomicUsize,
}

/// A sequence being decoded in a slot.
struct Sequence<B: Backend> {
    job: Job,
    cache: Activations<B>,
    /// Prompt and reply so far; the last token is not yet in the cache.
    tokens: Vec<u32>,
    generated: usize,
    sampler: Sampler,
    rng: Rng,
}

/// The engine's state: the model, free KV caches and active sequences.
pub struct Engine<'m, B: Backend> {
    be: &'m B,
    model: &'m Model,
    params: &'m B::Buf,
    batch: Activations<B>,
    free: Vec<Activations<B>>,
    active: Vec<Sequence<B>>,
    logits: Vec<f32>,
    load: Arc<Load>,
}

impl<'m, B: Backend> Engine<'m, B> {
    /// An engine decoding up to `slots` sequences together.
    pub fn new(
        be: &'m B,
        model: &'m Model,
        params: &'m B::Buf,
        slots: usize,
        load: Arc<Load>,
    ) -> Result<Self> {
        let cfg = &model.config;
        let free = (0..slots)
            .map(|_| Activations::inference(be, cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Engine {
            be,
            model,
            params,
            batch: Activations::decoding(be, cfg, slots)?,
            free,
            active: Vec::with_capacity(slots),
            logits: vec![0.0; cfg.vocab_size],
            load,
        })
    }

    /// Serve jobs until every sender of `jobs` is gone and the work is done.
    pub fn run(mut self, jobs: Receiver<Job>) {
        let mut open = true;
        while open || !self.active.is_empty() {
            if self.active.is_empty() {
                match jobs.recv() {
                    Ok(job) => self.admit(job),
                    Err(_) => open = false,
                }
            }
            while open && !self.free.is_empty() {
                match jobs.try_recv() {
                    Ok(job) => self.admit(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            self.step();
        }
    }

    /// Prefill a job's prompt into a free slot and draw its first token.
    fn admit(&mut self, job: Job) {
        self.load.queued.fetch_sub(1, Ordering::Relaxed);
        if job.events.is_closed() {
            return; // the client left while it waited
        }
        let Some(mut cache) = self.free.pop() else {
            unreachable!("admit is called only with a free slot");
        };
        let (be, model, params) = (self.be, self.model, self.params);
        let prompt = &job.prompt;
        let window = Window::continuing(0, prompt.len());
        be.run(|| model.forward(be, params, &mut cache, prompt, window, Mode::Eval));
        be.download(cache.logits_row(0), &mut self.logits);
        let mut seq = Sequence {
            tokens: job.prompt.clone(),
            rng: Rng::new(job.opts.seed, SERVE_STREAM),
            job,
            cache,
            generated: 0,
            sampler: Sampler::new(model.config.vocab_size),
        };
        let keep = Self::draw(&mut seq, &mut self.logits, model.config.block_size);
        self.load.active.fetch_add(1, Ordering::Relaxed);
        self.settle(seq, keep);
    }

    /// One decoding step over every active sequence.
    fn step(&mut self) {
        for seq in std::mem::take(&mut self.active) {
            let client_there = !seq.job.events.is_closed();
            self.settle(seq, client_there);
        }
        if self.active.is_empty() {
            return;
        }
        let tokens: Vec<u32> = self
            .active
            .iter()
            .map(|s| s.tokens[s.tokens.len() - 1])
            .collect();
        let positions: Vec<usize> = self.active.iter().map(|s| s.tokens.len() - 1).collect();
        let (be, model, params) = (self.be, self.model, self.params);
        let batch = &mut self.batch;
        let mut caches: Vec<_> = self.active.iter_mut().map(|s| &mut s.cache).collect();
        be.run(|| model.forward_batch(be, params, batch, &mut caches, &tokens, &positions));
        let block = model.config.block_size;
        for (i, mut seq) in std::mem::take(&mut self.active).into_iter().enumerate() {
            be.download(self.batch.logits_row(i), &mut self.logits);
            let keep = Self::draw(&mut seq, &mut self.logits, block);
            self.settle(seq, keep);
        }
    }

    /// Keep the sequence decoding, or end it and free its slot.
    fn settle(&mut self, seq: Sequence<B>, keep: bool) {
        if keep {
            self.active.push(seq);
        } else {
            self.load.active.fetch_sub(1, Ordering::Relaxed);
            self.free.push(seq.cache);
        }
    }

    /// Choose the sequence's next token from `logits` (scratch afterwards)
    /// and tell its client. Returns whether it goes on.
    fn draw(seq: &mut Sequence<B>, logits: &mut [f32], block: usize) -> bool {
        if let Some(bad) = logits.iter().find(|x| !x.is_finite()) {
            let message = Error::NonFinite(format!(
                "the model's logits hold {bad}: its weights give no usable probabilities"
            ));
            let _ = seq.job.events.send(Event::Failed(message.to_string()));
            return false;
        }
        let recent = &seq.tokens[seq.tokens.len().saturating_sub(block)..];
        let next = seq
            .sampler
            .choose(logits, recent, &seq.job.opts, &mut seq.rng);
        let events = &seq.job.events;
        if seq.job.stop_tokens.contains(&next) {
            let _ = events.send(Event::Done(Finish::Token(next)));
            return false;
        }
        seq.generated += 1;
        seq.tokens.push(next);
        if events.send(Event::Token(next)).is_err() {
            return false;
        }
        if seq.generated >= seq.job.opts.max_new_tokens || seq.tokens.len() > block {
            let _ = events.send(Event::Done(Finish::Length));
            return false;
        }
        true
    }
}
