//! Text generation: repeatedly run the model on the last `block_size` tokens,
//! turn the last position's logits into probabilities, and draw the next token.
//!
//! ```text
//! p = softmax(logits / temperature)      restricted to the top_k largest logits
//! next ~ Multinomial(p)                  (temperature 0: the argmax)
//! ```
//! The model keeps a key/value cache (the `qkv` rows of inference
//! [`Activations`]): while the text fits in the context, each new token is
//! one more position through the same forward pass. Past `block_size` tokens
//! the window slides, every position changes, and each token runs the
//! forward on the last `block_size` tokens (as nanoGPT does).

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::{Activations, Mode, Model, Window};
use crate::rng::Rng;

/// The random stream sampling draws from (with the user's seed).
const SAMPLE_STREAM: u64 = 0x5A3F;

#[derive(Debug, Clone)]
pub struct SampleOptions {
    pub max_new_tokens: usize,
    /// Divides the logits: below 1 sharpens the distribution, above 1 flattens it; 0 is greedy.
    pub temperature: f32,
    /// Keep only the `k` most likely tokens.
    pub top_k: Option<usize>,
    pub seed: u64,
}

/// Turn logits into the next token, in place (the slice is scratch afterwards).
fn choose(logits: &mut [f32], opts: &SampleOptions, rng: &mut Rng) -> u32 {
    if opts.temperature == 0.0 {
        return logits
            .iter()
            .enumerate()
            .fold(0, |best, (i, &x)| if x > logits[best] { i } else { best })
            as u32;
    }
    if let Some(k) = opts.top_k.filter(|&k| k < logits.len()) {
        let mut sorted = logits.to_vec();
        sorted.sort_unstable_by(|a, b| b.total_cmp(a));
        let threshold = sorted[k - 1];
        logits
            .iter_mut()
            .filter(|x| **x < threshold)
            .for_each(|x| *x = f32::NEG_INFINITY);
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut total = 0.0f64;
    for x in logits.iter_mut() {
        *x = ((*x - max) / opts.temperature).exp();
        total += *x as f64;
    }
    let mut target = rng.next_f32() as f64 * total;
    for (i, &p) in logits.iter().enumerate() {
        target -= p as f64;
        if target < 0.0 && p > 0.0 {
            return i as u32;
        }
    }
    // Rounding left a sliver of mass: the last token with any probability.
    logits.iter().rposition(|&p| p > 0.0).unwrap_or(0) as u32
}

/// A sequence being extended one token at a time, with the positions
/// already computed kept in the activations.
struct Context<'m, B: Backend> {
    model: &'m Model,
    params: &'m B::Buf,
    acts: Activations<B>,
    /// Positions of the sequence whose keys and values are in `acts`.
    cached: usize,
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
            logits: vec![0.0; model.config.vocab_size],
        })
    }

    /// The next-token logits after `tokens`, the whole sequence so far (the
    /// previous call's sequence plus new tokens). With `use_cache: false`
    /// every position is computed again.
    fn logits_after(&mut self, be: &B, tokens: &[u32], use_cache: bool) -> &mut [f32] {
        let (len, block) = (tokens.len(), self.model.config.block_size);
        let (pos, new) = if len > block {
            (0, &tokens[len - block..]) // slid: every position moved
        } else {
            let start = if use_cache {
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

impl SampleOptions {
    /// Reject settings sampling cannot use, naming the flag.
    pub fn validate(&self) -> Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return Err(Error::Config(format!(
                "--temperature must be a finite number at least 0, got {}",
                self.temperature
            )));
        }
        if self.top_k == Some(0) {
            return Err(Error::Config("--top-k must be at least 1".into()));
        }
        Ok(())
    }
}

/// Check the options and the prompt before generating (callers that print
/// the prompt call it first, so nothing is printed for a run that cannot start).
pub fn check(model: &Model, prompt: &[u32], opts: &SampleOptions) -> Result<()> {
    if prompt.is_empty() {
        return Err(Error::Data(
            "the prompt must contain at least one token".into(),
        ));
    }
    opts.validate()?;
    let v = model.config.vocab_size;
    if let Some(&bad) = prompt.iter().find(|&&id| id as usize >= v) {
        return Err(Error::Data(format!(
            "token id {bad} is outside the model's vocabulary of {v}"
        )));
    }
    Ok(())
}

/// Generate up to `max_new_tokens` tokens after `prompt` (at least one token),
/// calling `emit` with each new token as soon as it is drawn. A prompt longer
/// than the context is cropped to its last `block_size` tokens.
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
    check(model, prompt, opts)?;
    let mut context = Context::new(be, model, params)?;
    let mut rng = Rng::new(opts.seed, SAMPLE_STREAM);
    let mut tokens = prompt.to_vec();
    for _ in 0..opts.max_new_tokens {
        let logits = context.logits_after(be, &tokens, use_cache);
        if let Some(bad) = logits.iter().find(|x| !x.is_finite()) {
            return Err(Error::NonFinite(format!(
                "the model's logits hold {bad} after {} tokens: its weights give no usable \
                 probabilities (a run that diverged?)",
                tokens.len()
            )));
        }
        let next = choose(logits, opts, &mut rng);
        tokens.push(next);
        emit(next)?;
    }
    Ok(tokens.split_off(prompt.len()))
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
        top_k: None,
        seed: 0,
    };
    let speed = |use_cache| -> Result<f64> {
        let t0 = std::time::Instant::now();
        generate_with(be, model, params, &prompt, &opts, use_cache, |_| Ok(()))?;
        Ok(new_tokens as f64 / t0.elapsed().as_secs_f64())
    };
    Ok((speed(true)?, speed(false)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(temperature: f32, top_k: Option<usize>) -> SampleOptions {
        SampleOptions {
            max_new_tokens: 1,
            temperature,
            top_k,
            seed: 0,
        }
    }

    /// With the cache, before and after the context fills, generation picks
    /// the tokens that a full forward on the cropped context picks (with
    /// training activations: every row's logits, no cache), and so does
    /// generation without the cache.
    #[test]
    fn cached_generation_matches_full_forward_generation() {
        use crate::backend::cpu::Cpu;
        use crate::model::{Activation, Arch, ModelConfig, Norm};
        let cfg = ModelConfig {
            arch: Arch::Gpt,
            vocab_size: 23,
            block_size: 6,
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
            lora: None,
        };
        let model = Model::new(cfg).unwrap();
        let mut rng = Rng::new(11, 0);
        let params: Vec<f32> = (0..model.num_params())
            .map(|_| (rng.next_f32() - 0.5) * 2.0)
            .collect();
        let be = Cpu::new();
        let got = generate(&be, &model, &params, &[3, 1], &opts_n(1.0, 12), |_| Ok(())).unwrap();
        let mut tokens = vec![3u32, 1];
        let mut rng = Rng::new(0, SAMPLE_STREAM);
        let mut acts = Activations::training(&be, &model.config, 1, 6).unwrap();
        for _ in 0..12 {
            let context = &tokens[tokens.len().saturating_sub(6)..];
            let t = context.len();
            let window = Window::batch(1, t);
            model.forward(&be, &params, &mut acts, context, window, Mode::Eval);
            let mut row = acts.logits_row(t - 1).to_vec();
            let next = choose(&mut row, &opts_n(1.0, 1), &mut rng);
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

    fn opts_n(temperature: f32, n: usize) -> SampleOptions {
        SampleOptions {
            max_new_tokens: n,
            temperature,
            top_k: None,
            seed: 0,
        }
    }

    #[test]
    fn greedy_takes_the_argmax() {
        let mut rng = Rng::new(0, 0);
        assert_eq!(
            choose(&mut [0.1, 3.0, -1.0, 2.9], &opts(0.0, None), &mut rng),
            1
        );
    }

    #[test]
    fn top_k_never_draws_outside_the_k_best() {
        let mut rng = Rng::new(3, 0);
        let mut counts = [0; 4];
        for _ in 0..2000 {
            counts[choose(&mut [1.0, 0.5, 0.9, 0.0], &opts(1.0, Some(2)), &mut rng) as usize] += 1;
        }
        assert_eq!(counts[1] + counts[3], 0, "{counts:?}");
        // exp(1.0) : exp(0.9) is about 52.5% : 47.5%.
        assert!((950..1150).contains(&counts[0]), "{counts:?}");
    }
}
