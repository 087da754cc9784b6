//! One sequence being decoded: the single place where a next token is
//! chosen, whoever drives the model (`lmforge sample` and `chat` through a
//! [`super::Generator`], `lmforge serve`'s batched engine, the benchmarks).
//!
//! A [`Decoder`] owns the sequence (prompt and reply so far), its KV cache
//! and how much of it is computed, the sampler with its options and random
//! stream, the penalties, the stop tokens and stop strings, the length and
//! context policy, and the log-probabilities it reports. A driver only runs
//! forwards; each decoding step is
//!
//! ```text
//! feed()          what the next forward must compute:
//!                   Step { token, pos }      one new position after the cache
//!                                            (batchable: Model::forward_batch)
//!                   Window { tokens, pos }   several positions: the prompt's
//!                                            (prefill), or the whole slid window
//! forward / fed   run it (alone, or as one row of a batch) and hand over the logits
//! advance(tok)    choose the next token; returns it, its text (held back at a
//!                 partial stop string or UTF-8 character), its log-probability,
//!                 and why the sequence ended, if it did
//! ```
//!
//! Context policy: while the sequence fits in `block_size`, each token is one
//! more cached position. Past it the window slides: every position moves, so
//! each token runs the forward over the last `block_size` tokens from
//! position 0 (as nanoGPT does). Length policy: the sequence ends after
//! `max_new_tokens` tokens, at a stop token (not part of the reply), or at
//! the token that completes a stop string (its text cut before the stop).

use super::logprobs::{TokenLogprob, token_logprob};
use super::{Finish, SampleOptions, Sampler, StopText};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::{Activations, Mode, Model, Weights, Window};
use crate::rng::Rng;
use crate::tokenizer::Tokenizer;

/// The random stream sampling draws from (with the user's seed); a
/// request's `i`-th candidate (`n`, `best_of`) draws from stream `SAMPLE_STREAM + i`.
pub const SAMPLE_STREAM: u64 = 0x5A3F;

/// What the next forward must compute for a decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed<'a> {
    /// One new position after the cached ones: a row of a batched step.
    Step { token: u32, pos: usize },
    /// Positions `pos..pos + tokens.len()` (a prompt, or the slid window).
    Window { tokens: &'a [u32], pos: usize },
}

/// What one decoding step gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The token drawn and kept (`None`: a stop token ended the sequence).
    pub token: Option<u32>,
    /// Its log-probability and the alternatives', when asked for.
    pub logprob: Option<TokenLogprob>,
    /// Text now known to be part of the reply (may be empty).
    pub text: String,
    /// Why the sequence ended, if this step ended it.
    pub finish: Option<Finish>,
}

/// One sequence, its KV cache and its sampling state.
pub struct Decoder<B: Backend> {
    cache: Activations<B>,
    /// Leading positions of `tokens` whose keys and values are in `cache`.
    cached: usize,
    /// false: every position is computed again for each token (for `bench`).
    pub(crate) use_cache: bool,
    /// Prompt and reply so far.
    tokens: Vec<u32>,
    prompt_len: usize,
    /// Prompt positions taken from the cache by the last [`Decoder::start`].
    reused: usize,
    opts: SampleOptions,
    stop_tokens: Vec<u32>,
    sampler: Sampler,
    rng: Rng,
    stops: StopText,
    finish: Option<Finish>,
    block_size: usize,
    vocab_size: usize,
    /// The next-token logits on the host (scratch once a token is chosen).
    logits: Vec<f32>,
    /// A copy of them before sampling changes them (when log-probs are asked for).
    raw: Vec<f32>,
    ids: Vec<u32>,
}

impl<B: Backend> Decoder<B> {
    /// A decoder with its own KV cache, drawing from `seed`'s stream `stream`.
    pub fn new(be: &B, model: &Model, seed: u64, stream: u64) -> Result<Self> {
        let cfg = &model.config;
        Ok(Decoder {
            cache: Activations::inference(be, cfg)?,
            cached: 0,
            use_cache: true,
            tokens: Vec::new(),
            prompt_len: 0,
            reused: 0,
            opts: SampleOptions::default(),
            stop_tokens: Vec::new(),
            sampler: Sampler::new(cfg.vocab_size),
            rng: Rng::new(seed, SAMPLE_STREAM.wrapping_add(stream)),
            stops: StopText::default(),
            finish: Some(Finish::Length),
            block_size: cfg.block_size,
            vocab_size: cfg.vocab_size,
            logits: vec![0.0; cfg.vocab_size],
            raw: Vec::new(),
            ids: Vec::new(),
        })
    }

    /// Draw from `seed`'s stream `stream` from now on.
    pub fn reseed(&mut self, seed: u64, stream: u64) {
        self.rng = Rng::new(seed, SAMPLE_STREAM.wrapping_add(stream));
    }

    /// Begin a new sequence after `prompt` (checked: at least one token,
    /// all in the vocabulary; `opts` checked too). The positions it shares
    /// with the previous sequence stay in the cache.
    pub fn start(
        &mut self,
        prompt: &[u32],
        opts: &SampleOptions,
        stop_tokens: &[u32],
    ) -> Result<()> {
        opts.validate()?;
        check_prompt(self.vocab_size, prompt)?;
        let shared = common_prefix(&self.tokens, prompt);
        self.cached = self.cached.min(shared);
        // The last prompt position is always computed: its logits are needed.
        self.reused = self.cached.min(prompt.len() - 1);
        self.tokens.clear();
        self.tokens.extend_from_slice(prompt);
        self.prompt_len = prompt.len();
        self.opts.clone_from(opts);
        self.stop_tokens.clear();
        self.stop_tokens.extend_from_slice(stop_tokens);
        self.stops = StopText::new(&opts.stop);
        self.finish = (opts.max_new_tokens == 0).then_some(Finish::Length);
        if opts.logprobs.is_some() {
            self.raw.resize(self.vocab_size, 0.0);
        }
        Ok(())
    }

    /// Why the sequence ended; `None` while it goes on.
    pub fn finish(&self) -> Option<Finish> {
        self.finish
    }

    /// End the sequence now (the caller's reason, e.g. Ctrl-C); returns the
    /// text still held back.
    pub fn interrupt(&mut self) -> String {
        self.finish.get_or_insert(Finish::Interrupted);
        let mut rest = String::new();
        self.stops.finish(&mut rest);
        rest
    }

    /// Prompt and reply so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The reply's tokens so far (never a stop token).
    pub fn generated(&self) -> &[u32] {
        &self.tokens[self.prompt_len..]
    }

    /// How many positions of the sequence are in the KV cache.
    pub fn cached_positions(&self) -> usize {
        self.cached
    }

    /// How many positions of the last prompt were not computed again.
    pub fn reused_positions(&self) -> usize {
        self.reused
    }

    /// What the next forward must compute.
    pub fn feed(&self) -> Feed<'_> {
        let (from, pos) = self.to_compute();
        match &self.tokens[from..] {
            [token] => Feed::Step { token: *token, pos },
            tokens => Feed::Window { tokens, pos },
        }
    }

    /// The next forward's first token (an index into the sequence) and
    /// its position: past the context the last `block_size` tokens from 0.
    fn to_compute(&self) -> (usize, usize) {
        let (len, block) = (self.tokens.len(), self.block_size);
        if len > block {
            return (len - block, 0);
        }
        let start = if self.use_cache {
            self.cached.min(len - 1)
        } else {
            0
        };
        (start, start)
    }

    /// Run the next forward on this sequence alone and take its logits.
    pub fn forward(&mut self, be: &B, model: &Model, params: Weights<'_, B>) {
        let (from, pos) = self.to_compute();
        let tokens = &self.tokens[from..];
        let window = Window::continuing(pos, tokens.len());
        let cache = &mut self.cache;
        be.run(|| model.forward_with(be, params, cache, tokens, window, Mode::Eval));
        be.download(self.cache.logits_row(0), &mut self.logits);
        self.fed();
    }

    /// Take this sequence's logits from its row of a batched step.
    pub fn fed_from(&mut self, be: &B, logits: B::View<'_>) {
        be.download(logits, &mut self.logits);
        self.fed();
    }

    /// The forward of [`Decoder::feed`] is done: the cache holds the whole
    /// sequence, or after a slide nothing that a later position can use.
    fn fed(&mut self) {
        let len = self.tokens.len();
        self.cached = if len > self.block_size { 0 } else { len };
    }

    /// Choose the next token from the logits of the last forward. `tok`
    /// turns tokens into text (for stop strings); without it the text is
    /// empty and stop strings are not looked for.
    pub fn advance(&mut self, tok: Option<&dyn Tokenizer>) -> Result<Step> {
        if let Some(bad) = self.logits.iter().find(|x| !x.is_finite()) {
            return Err(Error::NonFinite(format!(
                "the model's logits hold {bad} after {} tokens: its weights give no usable \
                 probabilities (a run that diverged?)",
                self.tokens.len()
            )));
        }
        if self.opts.logprobs.is_some() {
            self.raw.copy_from_slice(&self.logits);
        }
        let len = self.tokens.len();
        let recent = &self.tokens[len.saturating_sub(self.block_size)..];
        let generated = &self.tokens[self.prompt_len..];
        let next = self.sampler.choose(
            &mut self.logits,
            recent,
            generated,
            &self.opts,
            &mut self.rng,
        );
        let mut text = String::new();
        if self.stop_tokens.contains(&next) {
            self.finish = Some(Finish::Token(next));
            self.stops.finish(&mut text);
            return Ok(Step {
                token: None,
                logprob: None,
                text,
                finish: self.finish,
            });
        }
        let logprob =
            (self.opts.logprobs).map(|k| token_logprob(&self.raw, next, k, &mut self.ids));
        self.tokens.push(next);
        let hit = tok.and_then(|tok| self.stops.push(&tok.decode_bytes(&[next]), &mut text));
        if let Some(k) = hit {
            self.finish = Some(Finish::StopString(k));
        } else if self.tokens.len() - self.prompt_len >= self.opts.max_new_tokens {
            self.finish = Some(Finish::Length);
            self.stops.finish(&mut text);
        }
        Ok(Step {
            token: Some(next),
            logprob,
            text,
            finish: self.finish,
        })
    }
}

/// Check a prompt before generating: at least one token, all in the vocabulary.
pub fn check_prompt(vocab_size: usize, prompt: &[u32]) -> Result<()> {
    if prompt.is_empty() {
        return Err(Error::Data(
            "the prompt must contain at least one token".into(),
        ));
    }
    if let Some(&bad) = prompt.iter().find(|&&id| id as usize >= vocab_size) {
        return Err(Error::Data(format!(
            "token id {bad} is outside the model's vocabulary of {vocab_size}"
        )));
    }
    Ok(())
}

/// How many leading tokens `a` and `b` share.
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Run the next forward of every decoder: those one position after their
/// cache ([`Feed::Step`]) together, as the rows of one
/// [`Model::forward_batch`] on `batch` (the weights are read once for all),
/// the others (a prompt, a slid window) each alone.
pub fn forward_all<B: Backend>(
    be: &B,
    model: &Model,
    params: Weights<'_, B>,
    batch: &mut Activations<B>,
    decoders: &mut [&mut Decoder<B>],
) {
    let (mut tokens, mut positions, mut in_batch) = (Vec::new(), Vec::new(), Vec::new());
    for decoder in decoders.iter() {
        let step = match decoder.feed() {
            Feed::Step { token, pos } => Some((token, pos)),
            Feed::Window { .. } => None,
        };
        in_batch.push(step.is_some());
        if let Some((token, pos)) = step {
            tokens.push(token);
            positions.push(pos);
        }
    }
    for (decoder, _) in decoders.iter_mut().zip(&in_batch).filter(|(_, b)| !**b) {
        decoder.forward(be, model, params);
    }
    if tokens.is_empty() {
        return;
    }
    let mut rows: Vec<&mut Decoder<B>> = decoders
        .iter_mut()
        .zip(&in_batch)
        .filter(|(_, b)| **b)
        .map(|(d, _)| &mut **d)
        .collect();
    let mut caches: Vec<&mut Activations<B>> = rows.iter_mut().map(|d| &mut d.cache).collect();
    be.run(|| model.forward_batch(be, params, batch, &mut caches, &tokens, &positions));
    for (row, decoder) in rows.into_iter().enumerate() {
        decoder.fed_from(be, batch.logits_row(row));
    }
}
