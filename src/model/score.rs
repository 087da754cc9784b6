//! Scoring token sequences with a trained model, outside training: every
//! position's logits, and the mean next-token loss. What a notebook asks of a
//! model (`Run.logits`, `Run.loss` in the Python package).
//!
//! Shapes: `ids` holds `B` sequences of `T` tokens, row-major `(B, T)`;
//! [`logits`] returns `(B, T, V)` row-major, row `(b, t)` being the scores of
//! the token after `ids[b, ..=t]`. [`loss`] scores `(B, T)` ids as inputs
//! `ids[:, :-1]` and targets `ids[:, 1:]`: the mean of `-log p(target)` over
//! the `B x (T - 1)` predictions, as training's loss (no dropout).

use super::{Activations, Arch, Mode, Model, Window};
use crate::backend::Backend;
use crate::error::{Error, Result};

/// Check `ids` as `batch` sequences the model can read: the same length, at
/// most its context (a bigram has none), ids in its vocabulary. Returns `T`.
fn check_ids(model: &Model, ids: &[u32], batch: usize) -> Result<usize> {
    if batch == 0 || ids.is_empty() || !ids.len().is_multiple_of(batch) {
        return Err(Error::Data(format!(
            "expected {batch} sequences of the same length, at least one token each; got {} ids",
            ids.len()
        )));
    }
    let t = ids.len() / batch;
    let block = model.config.block_size;
    if t > block && model.config.arch != Arch::Bigram {
        return Err(Error::Data(format!(
            "a sequence of {t} tokens is longer than the model's context of {block} positions"
        )));
    }
    crate::sample::check_prompt(model, ids)?;
    Ok(t)
}

/// The logits of every position of `batch` sequences `ids` (`(B, T)`):
/// `(B, T, V)` values, row-major.
pub fn logits<B: Backend>(
    be: &B,
    model: &Model,
    params: &B::Buf,
    ids: &[u32],
    batch: usize,
) -> Result<Vec<f32>> {
    let t = check_ids(model, ids, batch)?;
    let mut acts = Activations::training(be, &model.config, batch, t)?;
    let window = Window::batch(batch, t);
    be.run(|| model.forward(be, params, &mut acts, ids, window, Mode::Eval));
    let v = model.config.vocab_size;
    let mut out = vec![0.0; batch * t * v];
    for (row, dst) in out.chunks_exact_mut(v).enumerate() {
        be.download(acts.logits_row(row), dst);
    }
    Ok(out)
}

/// The mean next-token cross-entropy of `batch` sequences `ids` (`(B, T)`,
/// `T >= 2`): inputs `ids[:, :-1]`, targets `ids[:, 1:]`.
pub fn loss<B: Backend>(
    be: &B,
    model: &Model,
    params: &B::Buf,
    ids: &[u32],
    batch: usize,
) -> Result<f32> {
    let t = check_ids(model, ids, batch)?;
    if t < 2 {
        return Err(Error::Data(
            "a loss needs sequences of at least two tokens (an input and its next token)".into(),
        ));
    }
    let inputs: Vec<u32> = ids
        .chunks_exact(t)
        .flat_map(|s| &s[..t - 1])
        .copied()
        .collect();
    let targets: Vec<u32> = ids.chunks_exact(t).flat_map(|s| &s[1..]).copied().collect();
    let mut acts = Activations::training(be, &model.config, batch, t - 1)?;
    let window = Window::batch(batch, t - 1);
    Ok(be.run(|| {
        model.forward(be, params, &mut acts, &inputs, window, Mode::Eval);
        model.loss(be, &mut acts, &targets, window)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;
    use crate::model::{Activation, ModelConfig, Norm};

    fn tiny() -> (Model, Vec<f32>) {
        let config = ModelConfig {
            vocab_size: 11,
            block_size: 8,
            n_layer: 1,
            n_head: 2,
            n_embd: 8,
            dropout: 0.0,
            arch: Arch::Gpt,
            norm: Norm::Pre,
            activation: Activation::Gelu,
            tie_embeddings: true,
            bias: true,
            qkv_bias: true,
            lm_head_bias: false,
            llama: None,
            lora: None,
        };
        let model = Model::new(config).unwrap();
        let params = model.init_params(7);
        (model, params)
    }

    /// A batch's rows are the logits of each sequence alone, and the loss is
    /// the mean of -log softmax(logits)[target] computed here from them.
    #[test]
    fn batch_logits_are_each_sequences_and_loss_is_their_cross_entropy() {
        let (model, params) = tiny();
        let be = Cpu::new();
        let ids = [1u32, 4, 2, 9, 3, 3, 0, 10];
        let both = logits(&be, &model, &params, &ids, 2).unwrap();
        let first = logits(&be, &model, &params, &ids[..4], 1).unwrap();
        let second = logits(&be, &model, &params, &ids[4..], 1).unwrap();
        assert_eq!(both, [first.clone(), second.clone()].concat());
        let v = 11;
        let mut total = 0.0f64;
        for (seq, rows) in [(&ids[..4], &first), (&ids[4..], &second)] {
            for t in 0..3 {
                let row = &rows[t * v..(t + 1) * v];
                let max = row.iter().fold(f32::MIN, |m, &x| m.max(x)) as f64;
                let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
                total += max + sum.ln() - row[seq[t + 1] as usize] as f64;
            }
        }
        let got = loss(&be, &model, &params, &ids, 2).unwrap() as f64;
        assert!((got - total / 6.0).abs() < 1e-5, "{got} vs {}", total / 6.0);
    }

    #[test]
    fn bad_ids_are_errors() {
        let (model, params) = tiny();
        let be = Cpu::new();
        let too_long = vec![1u32; 9];
        let cases: [(&[u32], usize, &str); 4] = [
            (&too_long, 1, "longer than the model's context"),
            (&[1, 2, 3], 2, "same length"),
            (&[1, 11], 1, "outside the model's vocabulary"),
            (&[], 1, "at least one token"),
        ];
        for (ids, batch, want) in cases {
            let err = logits(&be, &model, &params, ids, batch)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err}");
        }
        let err = loss(&be, &model, &params, &[3], 1).unwrap_err().to_string();
        assert!(err.contains("at least two tokens"), "{err}");
    }
}
