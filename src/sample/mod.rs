//! Text generation: repeatedly run the model on the sequence so far, turn the
//! last position's logits into a next token ([`sampler`]: repetition
//! penalty, temperature, top-k, top-p, min-p), and stop at a stop token, a
//! stop string ([`stop`]), `max_new_tokens`, or when the caller says so.
//!
//! The model keeps a key/value cache (the `qkv` rows of inference
//! [`Activations`]): while the text fits in the context, each new token is
//! one more position through the same forward pass. A [`Generator`] keeps
//! its cache between calls, so a prompt that starts with the previous call's
//! sequence (a chat, one turn later) only computes its new positions. Past
//! `block_size` tokens the window slides, every position changes, and each
//! token runs the forward on the last `block_size` tokens (as nanoGPT does).

pub mod sampler;
pub mod stop;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::{Activations, Mode, Model, Window};
use crate::rng::Rng;
use crate::tokenizer::Tokenizer;
use std::path::Path;

pub use self::sampler::Sampler;
pub use self::stop::StopText;

/// The random stream sampling draws from (with the user's seed).
const SAMPLE_STREAM: u64 = 0x5A3F;

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
    /// Generation ends where the text contains one of these (not printed).
    pub stop: Vec<String>,
    pub seed: u64,
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
            stop: Vec::new(),
            seed: 1337,
        }
    }
}

impl SampleOptions {
    /// Check every option; an error names the flag at fault.
    pub fn validate(&self) -> Result<()> {
        let bad = |message: String| Err(Error::Config(message));
        let t = self.temperature;
        if !t.is_finite() || t < 0.0 {
            return bad(format!(
                "--temperature must be a finite number at least 0 (0 = greedy), got {t}"
            ));
        }
        if self.top_k == Some(0) {
            return bad("--top-k must be at least 1".into());
        }
        if let Some(p) = self.top_p.filter(|p| !(*p > 0.0 && *p <= 1.0)) {
            return bad(format!("--top-p must be above 0 and at most 1, got {p}"));
        }
        if let Some(p) = self.min_p.filter(|p| !(0.0..=1.0).contains(p)) {
            return bad(format!("--min-p must be between 0 and 1, got {p}"));
        }
        let r = self.repetition_penalty;
        if !r.is_finite() || r <= 0.0 {
            return bad(format!(
                "--repetition-penalty must be a finite number above 0 (1 = off), got {r}"
            ));
        }
        if self.stop.iter().any(String::is_empty) {
            return bad("--stop must not be empty".into());
        }
        Ok(())
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
    let (model, params) = crate::finetune::load_run(dir)?;
    let tokenizer = crate::checkpoint::load_tokenizer(dir, &model)?;
    Ok((model, params, tokenizer))
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
    if prompt.is_empty() {
        return Err(Error::Data(
            "the prompt must contain at least one token".into(),
        ));
    }
    let v = model.config.vocab_size;
    if let Some(&bad) = prompt.iter().find(|&&id| id as usize >= v) {
        return Err(Error::Data(format!(
            "token id {bad} is outside the model's vocabulary of {v}"
        )));
    }
    Ok(())
}

/// A sequence being extended one token at a time, with the positions
/// already computed kept in the activations.
struct Context<'m, B: Backend> {
    model: &'m Model,
    params: &'m B::Buf,
    acts: Activations<B>,
    /// Positions of the sequence whose keys and values are in `acts`.
    cached: usize,
    /// false: every position is computed again for each token (for `bench`).
    use_cache: bool,
    /// The next-token logits, on the host.
    logits: Vec<f32>,
}

impl<'m, B: Backend> Context<'m, B> {
    fn new(be: &B, model: &'m Model, params: &'m B::Buf) -> Result<Self> {
        Ok(Context {
            model,
            params,
            acts: Activations::inference(be, &model.config)?,
            cached: 0,
            use_cache: true,
            logits: vec![0.0; model.config.vocab_size],
        })
    }

    /// The next-token logits after `tokens`, the whole sequence so far: its
    /// first `cached` positions are those of the previous call.
    fn logits_after(&mut self, be: &B, tokens: &[u32]) -> &mut [f32] {
        let (len, block) = (tokens.len(), self.model.config.block_size);
        let (pos, new) = if len > block {
            (0, &tokens[len - block..]) // slid: every position moved
        } else {
            let start = if self.use_cache {
                self.cached.min(len - 1)
            } else {
                0
            };
            (start, &tokens[start..])
        };
        let window = Window::continuing(pos, new.len());
        let (model, params, acts) = (self.model, self.params, &mut self.acts);
        be.run(|| model.forward(be, params, acts, new, window, Mode::Eval));
        self.cached = if len > block { 0 } else { len };
        be.download(self.acts.logits_row(0), &mut self.logits);
        &mut self.logits
    }
}

/// Generates from one model, keeping the KV cache, the random stream and the
/// sampling scratch from one call to the next.
pub struct Generator<'m, B: Backend> {
    be: &'m B,
    context: Context<'m, B>,
    sampler: Sampler,
    rng: Rng,
    /// Tokens that end a generation (not part of the reply).
    stop_tokens: Vec<u32>,
    /// The last sequence: prompt and reply of the previous call.
    tokens: Vec<u32>,
    /// Prompt positions the last call took from the cache.
    reused: usize,
}

impl<'m, B: Backend> Generator<'m, B> {
    /// A generator drawing from the stream of `seed`, ending a reply at any
    /// of `stop_tokens` (e.g. the tokenizer's end of text).
    pub fn new(
        be: &'m B,
        model: &'m Model,
        params: &'m B::Buf,
        seed: u64,
        stop_tokens: Vec<u32>,
    ) -> Result<Self> {
        Ok(Generator {
            be,
            context: Context::new(be, model, params)?,
            sampler: Sampler::new(model.config.vocab_size),
            rng: Rng::new(seed, SAMPLE_STREAM),
            stop_tokens,
            tokens: Vec::new(),
            reused: 0,
        })
    }

    /// How many positions of the last sequence are in the KV cache.
    pub fn cached_positions(&self) -> usize {
        self.context.cached
    }

    /// How many positions of the last prompt were not computed again.
    pub fn reused_positions(&self) -> usize {
        self.reused
    }

    /// Draw up to `opts.max_new_tokens` tokens after `prompt`, calling `emit`
    /// with each as soon as it is drawn. The positions that `prompt` shares
    /// with the previous call's sequence are not computed again. Returns
    /// the tokens drawn (without a stop token) and why it ended.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        opts: &SampleOptions,
        mut emit: impl FnMut(u32) -> Result<Flow>,
    ) -> Result<(Vec<u32>, Finish)> {
        opts.validate()?;
        check_prompt(self.context.model, prompt)?;
        let shared = common_prefix(&self.tokens, prompt);
        self.context.cached = self.context.cached.min(shared);
        // The last prompt position is always computed: its logits are needed.
        self.reused = self.context.cached.min(prompt.len() - 1);
        self.tokens.clear();
        self.tokens.extend_from_slice(prompt);
        let block = self.context.model.config.block_size;
        let mut finish = Finish::Length;
        for _ in 0..opts.max_new_tokens {
            let logits = self.context.logits_after(self.be, &self.tokens);
            if let Some(bad) = logits.iter().find(|x| !x.is_finite()) {
                return Err(Error::NonFinite(format!(
                    "the model's logits hold {bad} after {} tokens: its weights give no usable \
                     probabilities (a run that diverged?)",
                    self.tokens.len()
                )));
            }
            let recent = &self.tokens[self.tokens.len().saturating_sub(block)..];
            let next = self.sampler.choose(logits, recent, opts, &mut self.rng);
            if self.stop_tokens.contains(&next) {
                finish = Finish::Token(next);
                break;
            }
            self.tokens.push(next);
            if emit(next)? == Flow::Stop {
                finish = Finish::Interrupted;
                break;
            }
        }
        Ok((self.tokens[prompt.len()..].to_vec(), finish))
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
        let mut stops = StopText::new(&opts.stop);
        let (mut piece, mut text, mut hit) = (String::new(), String::new(), None);
        let (tokens, mut finish) = self.generate(prompt, opts, |id| {
            piece.clear();
            hit = stops.push(&tok.decode_bytes(&[id]), &mut piece);
            text.push_str(&piece);
            let flow = on_text(&piece)?;
            Ok(if hit.is_some() { Flow::Stop } else { flow })
        })?;
        match hit {
            Some(k) => finish = Finish::StopString(k),
            None => {
                piece.clear();
                stops.finish(&mut piece);
                text.push_str(&piece);
                on_text(&piece)?;
            }
        }
        Ok(Reply {
            tokens,
            text,
            finish,
        })
    }
}

/// How many leading tokens `a` and `b` share.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Generate up to `max_new_tokens` tokens after `prompt` (at least one token),
/// calling `emit` with each new token as soon as it is drawn; no stop tokens.
/// A prompt longer than the context is cropped to its last `block_size` tokens.
pub fn generate<B: Backend>(
    be: &B,
    model: &Model,
    params: &B::Buf,
    prompt: &[u32],
    opts: &SampleOptions,
    emit: impl FnMut(u32) -> Result<()>,
) -> Result<Vec<u32>> {
    generate_with(be, model, params, prompt, opts, true, emit)
}

fn generate_with<B: Backend>(
    be: &B,
    model: &Model,
    params: &B::Buf,
    prompt: &[u32],
    opts: &SampleOptions,
    use_cache: bool,
    mut emit: impl FnMut(u32) -> Result<()>,
) -> Result<Vec<u32>> {
    let mut generator = Generator::new(be, model, params, opts.seed, Vec::new())?;
    generator.context.use_cache = use_cache;
    let (tokens, _) = generator.generate(prompt, opts, |t| emit(t).map(|()| Flow::Continue))?;
    Ok(tokens)
}

/// Decoding speed in tokens/s: `(with the KV cache, every position again for
/// each token)`, generating `new_tokens` after a prompt of `prompt_len`
/// tokens (greedy).
pub fn bench<B: Backend>(
    be: &B,
    model: &Model,
    params: &B::Buf,
    prompt_len: usize,
    new_tokens: usize,
) -> Result<(f64, f64)> {
    let block = model.config.block_size;
    if prompt_len == 0 || prompt_len + new_tokens > block {
        return Err(Error::Config(format!(
            "prompt ({prompt_len}) + new tokens ({new_tokens}) must be between 1 and block_size ({block})"
        )));
    }
    let v = model.config.vocab_size as u64;
    let prompt: Vec<u32> = (0..prompt_len as u64)
        .map(|i| (i * 7919 % v) as u32)
        .collect();
    let opts = SampleOptions {
        max_new_tokens: new_tokens,
        temperature: 0.0,
        ..SampleOptions::default()
    };
    let speed = |use_cache| -> Result<f64> {
        let t0 = std::time::Instant::now();
        generate_with(be, model, params, &prompt, &opts, use_cache, |_| Ok(()))?;
        Ok(new_tokens as f64 / t0.elapsed().as_secs_f64())
    };
    Ok((speed(true)?, speed(false)?))
}

/// Batched decoding speed in tokens/s, all streams together: `streams`
/// sequences (each after its own `prompt_len`-token prompt) decode
/// `new_tokens` each in steps of one [`Model::forward_batch`] over all of
/// them, as `lmforge serve` does with that many clients. Greedy choice on the
/// host; prefill is not timed.
pub fn bench_batched<B: Backend>(
    be: &B,
    model: &Model,
    params: &B::Buf,
    prompt_len: usize,
    new_tokens: usize,
    streams: usize,
) -> Result<f64> {
    let cfg = &model.config;
    if streams == 0 || prompt_len == 0 || prompt_len + new_tokens > cfg.block_size {
        return Err(Error::Config(format!(
            "streams ({streams}) and prompt ({prompt_len}) must be at least 1, and prompt + new tokens ({new_tokens}) at most block_size ({})",
            cfg.block_size
        )));
    }
    let mut caches = (0..streams)
        .map(|_| Activations::inference(be, cfg))
        .collect::<Result<Vec<_>>>()?;
    let mut batch = Activations::decoding(be, cfg, streams)?;
    let mut logits = vec![0.0f32; cfg.vocab_size];
    let mut tokens = Vec::with_capacity(streams);
    for (s, cache) in caches.iter_mut().enumerate() {
        let v = cfg.vocab_size as u64;
        let prompt: Vec<u32> = (0..prompt_len as u64)
            .map(|i| ((i + s as u64) * 7919 % v) as u32)
            .collect();
        let window = Window::continuing(0, prompt_len);
        be.run(|| model.forward(be, params, cache, &prompt, window, Mode::Eval));
        be.download(cache.logits_row(0), &mut logits);
        tokens.push(sampler::argmax(&logits));
    }
    let t0 = std::time::Instant::now();
    for step in 0..new_tokens {
        let positions = vec![prompt_len + step; streams];
        let mut refs: Vec<_> = caches.iter_mut().collect();
        be.run(|| model.forward_batch(be, params, &mut batch, &mut refs, &tokens, &positions));
        for (s, token) in tokens.iter_mut().enumerate() {
            be.download(batch.logits_row(s), &mut logits);
            *token = sampler::argmax(&logits);
        }
    }
    Ok((streams * new_tokens) as f64 / t0.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;
    use crate::model::{Activation, Arch, ModelConfig, Norm};

    /// A tiny random GPT: vocabulary 23, context 6.
    fn tiny(block_size: usize) -> (Model, Vec<f32>) {
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
            let next = sampler.choose(&mut row, context, &opts_n(1.0, 1), &mut rng);
            tokens.push(next);
        }
        assert_eq!(got, tokens[2..]);
        let uncached = generate_with(
            &be,
            &model,
            &params,
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
        let cases: [(SampleOptions, &str); 7] = [
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
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
    }
}
