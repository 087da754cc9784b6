//! `lmforge bench eval`: how fast scoring is, against two references timed
//! in the same process on the same model.
//!
//! - Text: scoring tokens/s (windows of `block_size`, stride `block_size`)
//!   against decoding tokens/s (greedy, with the KV cache): a window is one
//!   batched forward, decoding one forward per token.
//! - Multiple choice: `examples` synthetic questions in HellaSwag's layout
//!   (a context of 20 to 60 tokens, four endings of 8 to 32; about what
//!   GPT-2's tokenizer makes of HellaSwag) scored as `eval --choices` does,
//!   against one forward pass over the same number of tokens packed into
//!   full windows (no padding, no loss).

use super::choices::{Encoded, score_encoded};
use super::scorer::{Scorer, Sequence, default_rows};
use crate::backend::Backend;
use crate::error::Result;
use crate::model::{Activations, Mode, Model, Window};
use crate::rng::Rng;
use crate::sample::{SampleOptions, generate};
use std::time::Instant;

/// What [`bench`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalBench {
    pub decode_tokens_per_s: f64,
    pub score_tokens_per_s: f64,
    /// Tokens in the multiple-choice rows (context + ending, each ending's row).
    pub choice_tokens: usize,
    pub choices_s: f64,
    /// One forward over `choice_tokens` tokens in full windows.
    pub forward_s: f64,
}

/// Time decoding `decode_tokens`, scoring `windows` full windows, and
/// `examples` HellaSwag-layout questions, on random token ids, calling
/// `progress(stage, done, all)` as each stage goes (the last one, the
/// reference forward pass, counts windows).
pub fn bench<B: Backend>(
    be: &B,
    model: &Model,
    params: &B::Buf,
    (decode_tokens, windows, examples): (usize, usize, usize),
    mut progress: impl FnMut(&str, usize, usize),
) -> Result<EvalBench> {
    let (v, t) = (model.config.vocab_size, model.config.block_size);
    let mut rng = Rng::new(7, 0);
    let mut random =
        |n: usize| -> Vec<u32> { (0..n).map(|_| rng.below(v as u64) as u32).collect() };
    let opts = SampleOptions {
        max_new_tokens: decode_tokens.min(t - 1),
        temperature: 0.0,
        ..SampleOptions::default()
    };
    let clock = Instant::now();
    let mut decoded = 0;
    let drawn = generate(be, model, params, &random(1), &opts, |_| {
        decoded += 1;
        progress("decoding", decoded, opts.max_new_tokens);
        Ok(())
    })?;
    let decode_tokens_per_s = drawn.len() as f64 / clock.elapsed().as_secs_f64();

    let mut scorer = Scorer::new(be, model, params, default_rows(model))?;
    let text: Vec<Sequence> = (0..windows)
        .map(|_| Sequence::continuation(&random(t + 1), 0))
        .collect();
    let clock = Instant::now();
    let mut scored = 0;
    for batch in text.chunks(scorer.sequences_per_batch(t)) {
        scorer.score(batch)?;
        scored += batch.len();
        progress("scoring windows", scored, windows);
    }
    let score_tokens_per_s = (windows * t) as f64 / clock.elapsed().as_secs_f64();

    let questions: Vec<Encoded> = (0..examples)
        .map(|i| {
            let context = random(20 + i * 7 % 41);
            let endings: Vec<Vec<u32>> =
                (0..4).map(|k| random(8 + (i * 5 + k * 11) % 25)).collect();
            Encoded::new(i + 1, 0, &context, &endings, t)
        })
        .collect();
    let choice_tokens: usize = questions
        .iter()
        .flat_map(|q| &q.rows)
        .map(|r| r.inputs.len())
        .sum();
    let clock = Instant::now();
    score_encoded(&mut scorer, &questions, |done, all| {
        progress("questions", done, all)
    })?;
    let choices_s = clock.elapsed().as_secs_f64();
    drop(scorer);
    let tokens = random(choice_tokens);
    let forward_s = one_forward(be, model, params, &tokens, |done, all| {
        progress("one forward (windows)", done, all)
    })?;
    Ok(EvalBench {
        decode_tokens_per_s,
        score_tokens_per_s,
        choice_tokens,
        choices_s,
        forward_s,
    })
}

/// Seconds for the forward pass alone over `tokens`, in windows of
/// `block_size` positions, as many per pass as the scorer would take;
/// `progress(passes done, passes)` after each pass.
fn one_forward<B: Backend>(
    be: &B,
    model: &Model,
    params: &B::Buf,
    tokens: &[u32],
    mut progress: impl FnMut(usize, usize),
) -> Result<f64> {
    let (t, rows) = (model.config.block_size, default_rows(model));
    let mut acts = Activations::scoring(be, &model.config, rows)?;
    let per_pass = (rows / t).max(1) * t;
    let passes = tokens.len().div_ceil(per_pass);
    let clock = Instant::now();
    for (done, chunk) in tokens.chunks(per_pass).enumerate() {
        let window = match chunk.len() >= t {
            true => Window::batch(chunk.len() / t, t),
            false => Window::batch(1, chunk.len()),
        };
        let ids = &chunk[..window.n()];
        be.run(|| model.forward(be, params, &mut acts, ids, window, Mode::Eval));
        if window.n() < chunk.len() {
            let rest = &chunk[window.n()..];
            let w = Window::batch(1, rest.len());
            be.run(|| model.forward(be, params, &mut acts, rest, w, Mode::Eval));
        }
        progress(done + 1, passes);
    }
    let mut last = vec![0.0f32; model.config.vocab_size];
    be.download(acts.logits_row(0), &mut last); // waits for a device to finish
    Ok(clock.elapsed().as_secs_f64())
}
