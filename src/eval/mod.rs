//! Evaluation: how well a model predicts text it is given, in the numbers
//! the field compares.
//!
//! - [`text`]: mean loss, perplexity and bits per byte of a text, read in
//!   overlapping windows (`lmforge eval --text`);
//! - [`choices`]: multiple-choice accuracy (HellaSwag's `acc` and
//!   `acc_norm`, `lmforge eval --choices`, `train --eval-choices`);
//! - [`scorer`]: what both run, one batched forward pass per window giving
//!   every position's loss.

pub mod bench;
pub mod choices;
pub mod scorer;
pub mod text;

pub use self::choices::{ChoiceScore, Example, read_examples, score_choices};
pub use self::scorer::{Scorer, Sequence, default_rows};
pub use self::text::{TextScore, score_text};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;
    use crate::model::{Activation, Activations, Arch, Mode, Model, ModelConfig, Norm, Window};
    use crate::rng::Rng;

    fn random_model(cfg: ModelConfig) -> (Model, Vec<f32>) {
        let model = Model::new(cfg).unwrap();
        let mut rng = Rng::new(3, 0);
        let params = (0..model.num_params())
            .map(|_| rng.next_f32() - 0.5)
            .collect();
        (model, params)
    }

    fn gpt() -> ModelConfig {
        ModelConfig {
            arch: Arch::Gpt,
            vocab_size: 19,
            block_size: 8,
            n_layer: 2,
            n_head: 2,
            n_embd: 8,
            dropout: 0.1,
            norm: Norm::Pre,
            activation: Activation::Gelu,
            tie_embeddings: true,
            bias: true,
            qkv_bias: true,
            lm_head_bias: false,
            llama: None,
            lora: None,
        }
    }

    /// Sequences of different lengths scored together (padded in one
    /// forward of scoring activations) get the losses each gets alone from
    /// the training forward: both GPT layouts and a Llama.
    #[test]
    fn a_batch_scores_each_sequence_as_the_training_forward_does() {
        let llama = ModelConfig {
            arch: Arch::Llama,
            n_head: 4,
            bias: false,
            qkv_bias: false,
            activation: Activation::Silu,
            llama: Some(crate::model::LlamaConfig {
                n_kv_head: 2,
                intermediate_size: 12,
                rope_theta: 10_000.0,
                rope_scaling: Default::default(),
                rms_norm_eps: 1e-6,
            }),
            ..gpt()
        };
        let post = ModelConfig {
            norm: Norm::Post,
            activation: Activation::Relu,
            ..gpt()
        };
        for cfg in [gpt(), post, llama] {
            let (model, params) = random_model(cfg);
            let be = Cpu::new();
            let mut rng = Rng::new(8, 0);
            let seqs: Vec<Sequence> = [9usize, 4, 7]
                .iter()
                .map(|&n| {
                    let tokens: Vec<u32> = (0..n).map(|_| rng.below(19) as u32).collect();
                    Sequence::continuation(&tokens, 1)
                })
                .collect();
            let mut scorer = Scorer::new(&be, &model, &params, 24).unwrap();
            let got = scorer.score(&seqs).unwrap();
            for (s, losses) in seqs.iter().zip(&got) {
                let t = s.inputs.len();
                let mut acts = Activations::training(&be, &model.config, 1, t).unwrap();
                let w = Window::batch(1, t);
                model.forward(&be, &params, &mut acts, &s.inputs, w, Mode::Eval);
                model.loss(&be, &mut acts, &s.targets, w);
                let want = acts.losses(0..t);
                assert_eq!(losses[0], 0.0, "the context's prediction is ignored");
                for (a, e) in losses.iter().zip(want) {
                    assert!(
                        (a - e).abs() < 1e-5 * e.abs().max(1.0),
                        "{:?}: {a} vs {e}",
                        model.config.arch
                    );
                }
                assert!(losses[1..].iter().all(|&l| l > 0.0));
            }
        }
    }

    /// More than fits, or longer than the context: a clear error.
    #[test]
    fn a_batch_that_does_not_fit_is_refused() {
        let (model, params) = random_model(gpt());
        let be = Cpu::new();
        let mut scorer = Scorer::new(&be, &model, &params, 16).unwrap();
        let seq = |n: usize| Sequence::continuation(&vec![1; n + 1], 0);
        assert!(scorer.score(&[seq(8), seq(8)]).is_ok());
        for bad in [vec![seq(9)], vec![seq(8), seq(8), seq(1)]] {
            let err = scorer.score(&bad).unwrap_err().to_string();
            assert!(err.contains("cannot score"), "{err}");
        }
        let outside = Sequence {
            inputs: vec![19],
            targets: vec![0],
        };
        let err = scorer.score(&[outside]).unwrap_err().to_string();
        assert!(err.contains("vocabulary of 19"), "{err}");
    }
}
