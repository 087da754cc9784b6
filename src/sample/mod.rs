//! Text generation: repeatedly run the model on the last `block_size` tokens,
//! turn the last position's logits into probabilities, and draw the next token.
//!
//! ```text
//! p = softmax(logits / temperature)      restricted to the top_k largest logits
//! next ~ Multinomial(p)                  (temperature 0: the argmax)
//! ```

use crate::error::{Error, Result};
use crate::model::{Mode, Model};
use crate::rng::Rng;

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

/// Generate up to `max_new_tokens` tokens after `prompt` (at least one token),
/// calling `emit` with each new token as soon as it is drawn. A prompt longer
/// than the context is cropped to its last `block_size` tokens.
pub fn generate(
    model: &Model,
    params: &[f32],
    prompt: &[u32],
    opts: &SampleOptions,
    mut emit: impl FnMut(u32) -> Result<()>,
) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        return Err(Error::Data(
            "the prompt must contain at least one token".into(),
        ));
    }
    if !(opts.temperature >= 0.0) || !opts.temperature.is_finite() {
        return Err(Error::Config(format!(
            "temperature must be a non-negative number, got {}",
            opts.temperature
        )));
    }
    if opts.top_k == Some(0) {
        return Err(Error::Config("top_k must be at least 1".into()));
    }
    let v = model.config.vocab_size;
    if let Some(&bad) = prompt.iter().find(|&&id| id as usize >= v) {
        return Err(Error::Data(format!(
            "token id {bad} is outside the model's vocabulary of {v}"
        )));
    }
    let block = model.config.block_size;
    let mut acts = model.activations(1, block);
    let mut rng = Rng::new(opts.seed, 0x5A3F);
    let mut tokens = prompt.to_vec();
    let mut row = vec![0.0f32; v];
    for _ in 0..opts.max_new_tokens {
        let context = &tokens[tokens.len().saturating_sub(block)..];
        let t = context.len();
        model.forward(params, &mut acts, context, 1, t, Mode::Eval);
        row.copy_from_slice(&acts.logits[(t - 1) * v..t * v]);
        let next = choose(&mut row, opts, &mut rng);
        tokens.push(next);
        emit(next)?;
    }
    Ok(tokens.split_off(prompt.len()))
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
