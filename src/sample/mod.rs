//! Text generation: repeatedly run the model on the sequence so far, turn the
//! last position's logits into a next token ([`sampler`]: repetition,
//! presence and frequency penalties, temperature, top-k, top-p, min-p), and
//! stop at a stop token, a stop string ([`stop`]), `max_new_tokens`, or when
//! the caller says so.
//!
//! All of that is one sequence's [`Decoder`] ([`decoder`]): it keeps the
//! key/value cache (the `qkv` rows of inference [`Activations`]), the
//! sampling state and the context policy (past `block_size` tokens the window
//! slides). `lmforge sample` and `chat` drive one through a [`Generator`],
//! `lmforge serve`'s engine drives many in batched steps ([`forward_all`]),
//! and so do the benchmarks here. A [`Generator`] keeps its decoder between
//! calls, so a prompt that starts with the previous call's sequence (a chat,
//! one turn later) only computes its new positions.

pub mod decoder;
pub mod load;
pub mod logprobs;
pub mod sampler;
pub mod stop;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::{Activations, Model, Weights};
use crate::tokenizer::Tokenizer;
use std::path::Path;

pub use self::decoder::{Decoder, Feed, SAMPLE_STREAM, Step, forward_all};
pub use self::logprobs::TokenLogprob;
pub use self::sampler::Sampler;
pub use self::stop::StopText;

/// The highest temperature, and the largest presence or frequency penalty
/// (either sign), the CLI and the API accept (OpenAI's limits).
pub const MAX_TEMPERATURE: f32 = 2.0;
pub const MAX_PENALTY: f32 = 2.0;
/// The most alternatives reported per token with log-probabilities.
pub const MAX_LOGPROBS: usize = 20;

/// How to choose tokens and when to stop; the field names are the flags of
/// `lmforge sample` and `lmforge chat`.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleOptions {
    pub max_new_tokens: usize,
    /// Divides the logits: below 1 sharpens the distribution, above 1 flattens it; 0 is greedy.
    pub temperature: f32,
    /// Keep only the `k` most likely tokens.
    pub top_k: Option<usize>,
    /// Keep the most likely tokens that together hold this much probability (0 < p <= 1).
    pub top_p: Option<f32>,
    /// Keep the tokens at least this fraction as likely as the likeliest (0..=1).
    pub min_p: Option<f32>,
    /// Above 1 discourages the tokens already in the context window; 1 is off.
    pub repetition_penalty: f32,
    /// Subtracted once from the logit of every token already in the reply (OpenAI's).
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once per time it is in the reply (OpenAI's).
    pub frequency_penalty: f32,
    /// Generation ends where the text contains one of these (not printed).
    pub stop: Vec<String>,
    pub seed: u64,
    /// Report each drawn token's log-probability and this many alternatives'.
    pub logprobs: Option<usize>,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions {
            max_new_tokens: 500,
            temperature: 1.0,
            top_k: None,
            top_p: None,
            min_p: None,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            stop: Vec::new(),
            seed: 1337,
            logprobs: None,
        }
    }
}

/// An option outside its range: which (by field name, `top_p`) and why.
#[derive(Debug, Clone, PartialEq)]
pub struct BadOption {
    pub option: &'static str,
    pub rule: String,
}

impl BadOption {
    fn new(option: &'static str, rule: String) -> Self {
        BadOption { option, rule }
    }

    /// Said as a command-line flag: `--top-p must be ...`.
    pub fn as_flag(&self) -> String {
        format!("--{} {}", self.option.replace('_', "-"), self.rule)
    }
}

impl SampleOptions {
    /// Check every option against its range; the one place the limits are
    /// written, for the CLI ([`SampleOptions::validate`]) and the API alike.
    pub fn check(&self) -> std::result::Result<(), BadOption> {
        let bad = |option, rule| Err(BadOption::new(option, rule));
        let t = self.temperature;
        if !(0.0..=MAX_TEMPERATURE).contains(&t) {
            let rule =
                format!("must be a number from 0 to {MAX_TEMPERATURE} (0 = greedy), got {t}");
            return bad("temperature", rule);
        }
        if self.top_k == Some(0) {
            return bad("top_k", "must be at least 1".into());
        }
        if let Some(p) = self.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
            return bad("top_p", format!("must be above 0 and at most 1, got {p}"));
        }
        if let Some(p) = self.min_p.filter(|p| !(0.0..=1.0).contains(p)) {
            return bad("min_p", format!("must be between 0 and 1, got {p}"));
        }
        let r = self.repetition_penalty;
        if !r.is_finite() || r <= 0.0 {
            let rule = format!("must be a finite number above 0 (1 = off), got {r}");
            return bad("repetition_penalty", rule);
        }
        for (option, p) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if !(-MAX_PENALTY..=MAX_PENALTY).contains(&p) {
                let rule =
                    format!("must be a number from -{MAX_PENALTY} to {MAX_PENALTY}, got {p}");
                return bad(option, rule);
            }
        }
        if self.stop.iter().any(String::is_empty) {
            return bad("stop", "must not be empty".into());
        }
        if let Some(k) = self.logprobs.filter(|&k| k > MAX_LOGPROBS) {
            return bad(
                "logprobs",
                format!("must be from 0 to {MAX_LOGPROBS}, got {k}"),
            );
        }
        Ok(())
    }

    /// [`SampleOptions::check`] as an error naming the command-line flag.
    pub fn validate(&self) -> Result<()> {
        self.check().map_err(|bad| Error::Config(bad.as_flag()))
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// `max_new_tokens` tokens were drawn.
    Length,
    /// The model drew this stop token (end of text, `<|end|>`); it is not
    /// part of the reply.
    Token(u32),
    /// The text reached `opts.stop[i]`.
    StopString(usize),
    /// The caller's callback asked to stop (e.g. Ctrl-C).
    Interrupted,
}

/// What a callback tells the generation: go on, or stop now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// A finished text generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// The tokens drawn (without a stop token).
    pub tokens: Vec<u32>,
    /// Their text, cut before a stop string.
    pub text: String,
    pub finish: Finish,
}

/// Load what generation needs from a run directory: the model, its weights
/// and `tokenizer.json`. `sample` and `chat` both load through here.
pub fn load_run(dir: &Path) -> Result<(Model, Vec<f32>, Box<dyn Tokenizer>)> {
    check_is_run(dir)?;
    let (model, params) = load::load_f32(dir)?;
    let tokenizer = crate::checkpoint::load_tokenizer(dir, &model)?;
    Ok((model, params, tokenizer))
}

/// [`load_run`] with the weights as `wanted` on `be` (see [`load`]: other
/// types than f32 never hold the matrices in f32; `None`: [`load::resolve`]).
pub fn load_run_as<B: Backend>(
    be: &B,
    dir: &Path,
    wanted: Option<crate::backend::WeightType>,
) -> Result<(Model, load::LoadedWeights<B>, Box<dyn Tokenizer>)> {
    let ty = load::resolve(dir, wanted)?;
    if ty == crate::backend::WeightType::F32 {
        let (model, params, tokenizer) = load_run(dir)?;
        let params = be.upload(params)?;
        return Ok((
            model,
            load::LoadedWeights {
                params,
                packed: None,
            },
            tokenizer,
        ));
    }
    check_is_run(dir)?;
    let model = Model::new(crate::checkpoint::load_config(dir)?)?;
    let tokenizer = crate::checkpoint::load_tokenizer(dir, &model)?;
    let weights = load::load_weights(be, dir, &model, ty)?;
    Ok((model, weights, tokenizer))
}

/// A folder that is not a run is told so (rather than "config.json: No such file").
pub fn check_is_run(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Err(Error::Data(format!("{}: no such folder", dir.display())));
    }
    if !dir.join(crate::checkpoint::CONFIG_FILE).exists() {
        return Err(Error::Data(format!(
            "{} is not an lmforge run (no {}); runs are made by `lmforge train` or \
             `lmforge import-hf`",
            dir.display(),
            crate::checkpoint::CONFIG_FILE
        )));
    }
    Ok(())
}

/// Check a prompt before generating: at least one token, all in the vocabulary.
pub fn check_prompt(model: &Model, prompt: &[u32]) -> Result<()> {
    decoder::check_prompt(model.config.vocab_size, prompt)
}

/// Generates from one model through one [`Decoder`], keeping the KV cache
/// and the random stream from one call to the next.
pub struct Generator<'m, B: Backend> {
    be: &'m B,
    model: &'m Model,
    params: Weights<'m, B>,
    decoder: Decoder<B>,
    /// Tokens that end a generation (not part of the reply).
    stop_tokens: Vec<u32>,
}

impl<'m, B: Backend> Generator<'m, B> {
    /// A generator drawing from the stream of `seed`, ending a reply at any
    /// of `stop_tokens` (e.g. the tokenizer's end of text).
    pub fn new(
        be: &'m B,
        model: &'m Model,
        params: impl Into<Weights<'m, B>>,
        seed: u64,
        stop_tokens: Vec<u32>,
    ) -> Result<Self> {
        Ok(Generator {
            be,
            model,
            params: params.into(),
            decoder: Decoder::new(be, model, seed, 0)?,
            stop_tokens,
        })
    }

    /// How many positions of the last sequence are in the KV cache.
    pub fn cached_positions(&self) -> usize {
        self.decoder.cached_positions()
    }

    /// How many positions of the last prompt were not computed again.
    pub fn reused_positions(&self) -> usize {
        self.decoder.reused_positions()
    }

    /// Decode after `prompt` until the decoder ends the sequence, calling
    /// `on_step` with each step; when it says stop, the sequence is
    /// interrupted and `on_step` gets one last step with the held-back text.
    fn run(
        &mut self,
        tok: Option<&dyn Tokenizer>,
        prompt: &[u32],
        opts: &SampleOptions,
        mut on_step: impl FnMut(&Step) -> Result<Flow>,
    ) -> Result<Finish> {
        self.decoder.start(prompt, opts, &self.stop_tokens)?;
        loop {
            if let Some(finish) = self.decoder.finish() {
                return Ok(finish);
            }
            self.decoder.forward(self.be, self.model, self.params);
            let step = self.decoder.advance(tok)?;
            if on_step(&step)? == Flow::Stop && step.finish.is_none() {
                let text = self.decoder.interrupt();
                let finish = self.decoder.finish();
                on_step(&Step {
                    token: None,
                    logprob: None,
                    text,
                    finish,
                })?;
            }
        }
    }

    /// Draw up to `opts.max_new_tokens` tokens after `prompt`, calling `emit`
    /// with each as soon as it is drawn. The positions that `prompt` shares
    /// with the previous call's sequence are not computed again. Stop
    /// strings need the text: see [`Generator::generate_text`]. Returns the
    /// tokens drawn (without a stop token) and why it ended.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        opts: &SampleOptions,
        mut emit: impl FnMut(u32) -> Result<Flow>,
    ) -> Result<(Vec<u32>, Finish)> {
        let finish = self.run(None, prompt, opts, |step| match step.token {
            Some(token) => emit(token),
            None => Ok(Flow::Continue),
        })?;
        Ok((self.decoder.generated().to_vec(), finish))
    }

    /// [`Generator::generate`] as text: `on_text` gets each piece as soon as
    /// it is known to be part of the reply (see [`stop`]; it may be empty,
    /// and is called once per token so that it can stop the reply).
    pub fn generate_text(
        &mut self,
        tok: &dyn Tokenizer,
        prompt: &[u32],
        opts: &SampleOptions,
        mut on_text: impl FnMut(&str) -> Result<Flow>,
    ) -> Result<Reply> {
        let mut text = String::new();
        let finish = self.run(Some(tok), prompt, opts, |step| {
            text.push_str(&step.text);
            on_text(&step.text)
        })?;
        Ok(Reply {
            tokens: self.decoder.generated().to_vec(),
            text,
            finish,
        })
    }
}

/// Generate up to `max_new_tokens` tokens after `prompt` (at least one token),
/// calling `emit` with each new token as soon as it is drawn; no stop tokens.
/// Past the context the window slides (so a prompt longer than the context
/// is read from its last `block_size` tokens).
pub fn generate<'p, B: Backend + 'p>(
    be: &B,
    model: &Model,
    params: impl Into<Weights<'p, B>>,
    prompt: &[u32],
    opts: &SampleOptions,
    emit: impl FnMut(u32) -> Result<()>,
) -> Result<Vec<u32>> {
    generate_with(be, model, params.into(), prompt, opts, true, emit)
}

fn generate_with<B: Backend>(
    be: &B,
    model: &Model,
    params: Weights<'_, B>,
    prompt: &[u32],
    opts: &SampleOptions,
    use_cache: bool,
    mut emit: impl FnMut(u32) -> Result<()>,
) -> Result<Vec<u32>> {
    let mut generator = Generator::new(be, model, params, opts.seed, Vec::new())?;
    generator.decoder.use_cache = use_cache;
    let (tokens, _) = generator.generate(prompt, opts, |t| emit(t).map(|()| Flow::Continue))?;
    Ok(tokens)
}

/// Decoding speed in tokens/s on a synthetic `prompt_len`-token prompt:
/// `new_tokens` greedy tokens with the KV cache, counted from the first new
/// token on (the prompt's forward pass is [`bench_prompt`]'s figure, as
/// llama.cpp splits prompt processing from generation), and, when
/// `uncached`, the same without the cache (every step recomputes the whole
/// context: the course's loop, for comparison).
pub fn bench<'p, B: Backend + 'p>(
    be: &B,
    model: &Model,
    params: impl Into<Weights<'p, B>>,
    (prompt_len, new_tokens): (usize, usize),
    uncached: bool,
) -> Result<(f64, Option<f64>)> {
    let params = params.into();
    let prompt = synthetic_prompt(model, prompt_len, new_tokens)?;
    let opts = greedy(new_tokens);
    let mut first = None;
    generate_with(be, model, params, &prompt, &opts, true, |_| {
        first.get_or_insert_with(std::time::Instant::now);
        Ok(())
    })?;
    let cached = match first {
        Some(t0) if new_tokens > 1 => (new_tokens - 1) as f64 / t0.elapsed().as_secs_f64(),
        _ => 0.0,
    };
    let uncached = uncached.then(|| -> Result<f64> {
        let t0 = std::time::Instant::now();
        generate_with(be, model, params, &prompt, &opts, false, |_| Ok(()))?;
        Ok(new_tokens as f64 / t0.elapsed().as_secs_f64())
    });
    Ok((cached, uncached.transpose()?))
}

/// Prompt processing speed in tokens/s: one forward pass over a synthetic
/// `prompt_len`-token prompt, filling the KV cache (llama.cpp's `pp` figure).
pub fn bench_prompt<'p, B: Backend + 'p>(
    be: &B,
    model: &Model,
    params: impl Into<Weights<'p, B>>,
    prompt_len: usize,
) -> Result<f64> {
    let prompt = synthetic_prompt(model, prompt_len, 0)?;
    let mut decoder = Decoder::new(be, model, 0, 0)?;
    decoder.start(&prompt, &greedy(1), &[])?;
    let t0 = std::time::Instant::now();
    decoder.forward(be, model, params.into());
    Ok(prompt_len as f64 / t0.elapsed().as_secs_f64())
}

/// `prompt_len` ids spread over the vocabulary, checked to leave room for
/// `new_tokens` more in the context.
fn synthetic_prompt(model: &Model, prompt_len: usize, new_tokens: usize) -> Result<Vec<u32>> {
    let block = model.config.block_size;
    if prompt_len == 0 || prompt_len + new_tokens > block {
        return Err(Error::Config(format!(
            "prompt ({prompt_len}) + new tokens ({new_tokens}) must be between 1 and block_size ({block})"
        )));
    }
    let v = model.config.vocab_size as u64;
    Ok((0..prompt_len as u64)
        .map(|i| (i * 7919 % v) as u32)
        .collect())
}

fn greedy(max_new_tokens: usize) -> SampleOptions {
    SampleOptions {
        max_new_tokens,
        temperature: 0.0,
        ..SampleOptions::default()
    }
}

/// Batched decoding speed in tokens/s, all streams together: `streams`
/// decoders (each after its own `prompt_len`-token prompt) decode
/// `new_tokens` each in steps of [`forward_all`] (one
/// [`Model::forward_batch`] over all of them), as `lmforge serve`'s engine
/// does with that many clients. Greedy; prefill and the first token are not
/// timed.
pub fn bench_batched<'p, B: Backend + 'p>(
    be: &B,
    model: &Model,
    params: impl Into<Weights<'p, B>>,
    prompt_len: usize,
    new_tokens: usize,
    streams: usize,
) -> Result<f64> {
    let (params, cfg) = (params.into(), &model.config);
    if streams == 0 || prompt_len == 0 || prompt_len + new_tokens > cfg.block_size {
        return Err(Error::Config(format!(
            "streams ({streams}) and prompt ({prompt_len}) must be at least 1, and prompt + new tokens ({new_tokens}) at most block_size ({})",
            cfg.block_size
        )));
    }
    let mut batch = Activations::decoding(be, cfg, streams)?;
    let opts = greedy(new_tokens + 1);
    let v = cfg.vocab_size as u64;
    let mut decoders = Vec::with_capacity(streams);
    for s in 0..streams as u64 {
        let mut decoder = Decoder::new(be, model, 0, s)?;
        let prompt: Vec<u32> = (0..prompt_len as u64)
            .map(|i| ((i + s) * 7919 % v) as u32)
            .collect();
        decoder.start(&prompt, &opts, &[])?;
        decoder.forward(be, model, params);
        decoder.advance(None)?;
        decoders.push(decoder);
    }
    let t0 = std::time::Instant::now();
    for _ in 0..new_tokens {
        let mut all: Vec<&mut Decoder<B>> = decoders.iter_mut().collect();
        forward_all(be, model, params, &mut batch, &mut all);
        for decoder in all {
            decoder.advance(None)?;
        }
    }
    Ok((streams * new_tokens) as f64 / t0.elapsed().as_secs_f64())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;
    use crate::model::{Activation, Arch, Mode, ModelConfig, Norm, Window};
    use crate::rng::Rng;

    /// A tiny random GPT: vocabulary 23, context `block_size`.
    pub(crate) fn tiny(block_size: usize) -> (Model, Vec<f32>) {
        let cfg = ModelConfig {
            arch: Arch::Gpt,
            vocab_size: 23,
            block_size,
            n_layer: 2,
            n_head: 2,
            n_embd: 8,
            dropout: 0.0,
            norm: Norm::Pre,
            activation: Activation::Gelu,
            tie_embeddings: true,
            bias: true,
            qkv_bias: true,
            lm_head_bias: false,
            llama: None,
            lora: None,
        };
        let model = Model::new(cfg).unwrap();
        let mut rng = Rng::new(11, 0);
        let params: Vec<f32> = (0..model.num_params())
            .map(|_| (rng.next_f32() - 0.5) * 2.0)
            .collect();
        (model, params)
    }

    fn opts_n(temperature: f32, n: usize) -> SampleOptions {
        SampleOptions {
            max_new_tokens: n,
            temperature,
            seed: 0,
            ..SampleOptions::default()
        }
    }

    /// With the cache, before and after the context fills, generation picks
    /// the tokens that a full forward on the cropped context picks (with
    /// training activations: every row's logits, no cache), and so does
    /// generation without the cache.
    #[test]
    fn cached_generation_matches_full_forward_generation() {
        let (model, params) = tiny(6);
        let be = Cpu::new();
        let got = generate(&be, &model, &params, &[3, 1], &opts_n(1.0, 12), |_| Ok(())).unwrap();
        let mut tokens = vec![3u32, 1];
        let mut rng = Rng::new(0, SAMPLE_STREAM);
        let mut sampler = Sampler::new(23);
        let mut acts = Activations::training(&be, &model.config, 1, 6).unwrap();
        for _ in 0..12 {
            let context = &tokens[tokens.len().saturating_sub(6)..];
            let t = context.len();
            let window = Window::batch(1, t);
            model.forward(&be, &params, &mut acts, context, window, Mode::Eval);
            let mut row = acts.logits_row(t - 1).to_vec();
            let next = sampler.choose(&mut row, context, &tokens[2..], &opts_n(1.0, 1), &mut rng);
            tokens.push(next);
        }
        assert_eq!(got, tokens[2..]);
        let uncached = generate_with(
            &be,
            &model,
            (&params).into(),
            &[3, 1],
            &opts_n(1.0, 12),
            false,
            |_| Ok(()),
        );
        assert_eq!(uncached.unwrap(), got);
        assert!(
            got.iter().collect::<std::collections::HashSet<_>>().len() > 2,
            "not a degenerate sequence: {got:?}"
        );
    }

    /// The batched decoding benchmark runs every stream to the end and
    /// refuses what cannot run: no streams, no prompt, more than the context.
    #[test]
    fn bench_batched_times_streams_and_refuses_impossible_runs() {
        let (model, params) = tiny(16);
        let be = Cpu::new();
        let speed = bench_batched(&be, &model, &params, 4, 12, 3).unwrap();
        assert!(speed.is_finite() && speed > 0.0, "speed {speed}");
        for (prompt, new, streams) in [(4, 12, 0), (0, 4, 2), (8, 9, 2)] {
            let err = bench_batched(&be, &model, &params, prompt, new, streams).unwrap_err();
            assert!(err.to_string().contains("block_size (16)"), "{err}");
        }
    }

    /// A second prompt that continues, or departs from, the first call's
    /// sequence gives what a fresh generator gives (greedy, so the random
    /// stream plays no part), while reusing the shared positions.
    #[test]
    fn a_generator_reuses_the_shared_prefix_correctly() {
        let (model, params) = tiny(16);
        let be = Cpu::new();
        let greedy = opts_n(0.0, 4);
        let mut reused = Generator::new(&be, &model, &params, 0, Vec::new()).unwrap();
        let (first, _) = reused
            .generate(&[5, 6, 7], &greedy, |_| Ok(Flow::Continue))
            .unwrap();
        assert_eq!(reused.cached_positions(), 3 + first.len() - 1);
        assert_eq!(reused.reused_positions(), 0);
        let longer: Vec<u32> = [&[5, 6, 7][..], &first, &[2, 9]].concat();
        for (prompt, reuses) in [(longer, 6), (vec![5, 6, 1, 1], 2), (vec![8], 0)] {
            let (again, _) = reused
                .generate(&prompt, &greedy, |_| Ok(Flow::Continue))
                .unwrap();
            let mut fresh = Generator::new(&be, &model, &params, 0, Vec::new()).unwrap();
            let (want, _) = fresh
                .generate(&prompt, &greedy, |_| Ok(Flow::Continue))
                .unwrap();
            assert_eq!(again, want, "prompt {prompt:?}");
            assert_eq!(reused.reused_positions(), reuses, "prompt {prompt:?}");
        }
    }

    #[test]
    fn a_stop_token_ends_the_reply_and_is_left_out() {
        let (model, params) = tiny(32);
        let be = Cpu::new();
        let opts = opts_n(1.0, 20);
        let mut free = Generator::new(&be, &model, &params, 4, Vec::new()).unwrap();
        let (all, finish) = free.generate(&[1], &opts, |_| Ok(Flow::Continue)).unwrap();
        assert_eq!((all.len(), finish), (20, Finish::Length));
        let stop = all[5];
        let cut = all.iter().position(|&t| t == stop).unwrap();
        let mut stopped = Generator::new(&be, &model, &params, 4, vec![stop]).unwrap();
        let mut emitted = Vec::new();
        let (got, finish) = stopped
            .generate(&[1], &opts, |t| {
                emitted.push(t);
                Ok(Flow::Continue)
            })
            .unwrap();
        assert_eq!(got, all[..cut]);
        assert_eq!(emitted, got);
        assert_eq!(finish, Finish::Token(stop));
        let mut interrupted = Generator::new(&be, &model, &params, 4, Vec::new()).unwrap();
        let (got, finish) = interrupted
            .generate(&[1], &opts, |_| Ok(Flow::Stop))
            .unwrap();
        assert_eq!((got.len(), finish), (1, Finish::Interrupted));
    }

    #[test]
    fn a_stop_string_cuts_the_text_before_it() {
        let (model, params) = tiny(64);
        let be = Cpu::new();
        let tok = crate::tokenizer::CharTokenizer::from_text("abcdefghijklmnopqrstuvw").unwrap();
        let run = |stop: Vec<String>| {
            let opts = SampleOptions {
                stop,
                ..opts_n(1.0, 30)
            };
            let mut g = Generator::new(&be, &model, &params, 9, Vec::new()).unwrap();
            let mut streamed = String::new();
            let reply = g
                .generate_text(&tok, &[0], &opts, |piece| {
                    streamed.push_str(piece);
                    Ok(Flow::Continue)
                })
                .unwrap();
            assert_eq!(streamed, reply.text, "what is streamed is the reply");
            reply
        };
        let full = run(Vec::new());
        assert_eq!((full.text.len(), full.finish), (30, Finish::Length));
        let stop = full.text[10..12].to_string();
        let at = full.text.find(&stop).unwrap();
        let cut = run(vec!["zz".into(), stop]);
        assert_eq!(cut.text, full.text[..at]);
        assert_eq!(cut.finish, Finish::StopString(1));
        assert_eq!(
            cut.tokens,
            full.tokens[..at + 2],
            "the stop's tokens were drawn"
        );
    }

    #[test]
    fn every_bad_option_is_named() {
        let cases: [(SampleOptions, &str); 11] = [
            (
                SampleOptions {
                    temperature: 2.5,
                    ..Default::default()
                },
                "--temperature",
            ),
            (
                SampleOptions {
                    presence_penalty: 2.5,
                    ..Default::default()
                },
                "--presence-penalty",
            ),
            (
                SampleOptions {
                    frequency_penalty: -2.5,
                    ..Default::default()
                },
                "--frequency-penalty",
            ),
            (
                SampleOptions {
                    logprobs: Some(21),
                    ..Default::default()
                },
                "--logprobs",
            ),
            (
                SampleOptions {
                    temperature: -1.0,
                    ..Default::default()
                },
                "--temperature",
            ),
            (
                SampleOptions {
                    temperature: f32::NAN,
                    ..Default::default()
                },
                "--temperature",
            ),
            (
                SampleOptions {
                    top_k: Some(0),
                    ..Default::default()
                },
                "--top-k",
            ),
            (
                SampleOptions {
                    top_p: Some(0.0),
                    ..Default::default()
                },
                "--top-p",
            ),
            (
                SampleOptions {
                    min_p: Some(1.5),
                    ..Default::default()
                },
                "--min-p",
            ),
            (
                SampleOptions {
                    repetition_penalty: 0.0,
                    ..Default::default()
                },
                "--repetition-penalty",
            ),
            (
                SampleOptions {
                    stop: vec![String::new()],
                    ..Default::default()
                },
                "--stop",
            ),
        ];
        for (opts, flag) in cases {
            let err = opts.validate().unwrap_err().to_string();
            assert!(err.contains(flag), "{err}");
        }
        assert!(SampleOptions::default().validate().is_ok());
        let ok = SampleOptions {
            top_p: Some(1.0),
            min_p: Some(0.0),
            temperature: 2.0,
            presence_penalty: -2.0,
            frequency_penalty: 2.0,
            logprobs: Some(20),
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
    }
}
