//! Finite-difference check of the whole model's backward pass: for a sample of
//! parameters, compare the analytic gradient with
//! (loss(p + h) - loss(p - h)) / 2h, computed in f32 with h = 1e-2 (1e-3 across ReLU's kink).
//! Dropout is on: its masks are a function of (seed, step key), so the loss
//! is the same deterministic function of the parameters in every evaluation.
//! Tolerance: |analytic - numeric| <= 2e-3 + 2e-2 |numeric|, loose enough for
//! f32 rounding in the differences and tight enough that a wrong sign, a
//! missing term or a dropped residual fails it.

use lmforge::model::{Activation, Arch, Mode, Model, ModelConfig, Norm};
use lmforge::rng::Rng;

fn config(norm: Norm, activation: Activation, tie: bool, dropout: f32) -> ModelConfig {
    ModelConfig {
        arch: Arch::Gpt,
        vocab_size: 13,
        block_size: 8,
        n_layer: 2,
        n_head: 2,
        n_embd: 8,
        dropout,
        norm,
        activation,
        tie_embeddings: tie,
        bias: true,
        qkv_bias: norm == Norm::Pre,
        lm_head_bias: !tie,
    }
}

fn check(cfg: ModelConfig) {
    let model = Model::new(cfg.clone()).unwrap();
    let (b, t) = (2, 6);
    let mut rng = Rng::new(42, 0);
    // Larger-than-init weights so every path carries signal.
    let mut params: Vec<f32> = (0..model.num_params())
        .map(|_| (rng.next_f32() - 0.5) * 0.8)
        .collect();
    for spec in &model.layout.tensors {
        if spec.name.contains("ln_") && spec.name.ends_with("weight") {
            params[spec.range.clone()]
                .iter_mut()
                .for_each(|w| *w += 1.0);
        }
    }
    let idx: Vec<u32> = (0..b * t)
        .map(|_| rng.below(cfg.vocab_size as u64) as u32)
        .collect();
    let targets: Vec<u32> = (0..b * t)
        .map(|_| rng.below(cfg.vocab_size as u64) as u32)
        .collect();
    let mode = Mode::Train {
        seed: 7,
        step_key: 3,
    };
    let mut acts = model.activations(b, t);
    let loss_at = |p: &[f32], acts: &mut lmforge::model::Activations| {
        model.forward(p, acts, &idx, b, t, mode);
        model.loss(acts, &targets)
    };
    model.forward(&params, &mut acts, &idx, b, t, mode);
    let mut grads = vec![0.0f32; params.len()];
    model.backward(
        &params,
        &mut grads,
        &mut acts,
        &idx,
        &targets,
        b,
        t,
        mode,
        1.0 / (b * t) as f32,
    );

    // ReLU has a kink at 0: a smaller step is less likely to cross it.
    let h = if cfg.activation == Activation::Relu {
        1e-3f32
    } else {
        1e-2
    };
    let mut checked = 0;
    for spec in &model.layout.tensors {
        // A few entries of every tensor, spread over it.
        let len = spec.range.len();
        for k in 0..4 {
            let i = spec.range.start + (k * 7919 + 3) % len;
            let saved = params[i];
            params[i] = saved + h;
            let plus = loss_at(&params, &mut acts) as f64;
            params[i] = saved - h;
            let minus = loss_at(&params, &mut acts) as f64;
            params[i] = saved;
            let numeric = ((plus - minus) / (2.0 * h as f64)) as f32;
            let analytic = grads[i];
            assert!(
                (analytic - numeric).abs() <= 2e-3 + 2e-2 * numeric.abs(),
                "{} [{}]: analytic {analytic} vs numeric {numeric} ({cfg:?})",
                spec.name,
                i - spec.range.start
            );
            checked += 1;
        }
    }
    assert!(checked >= 4 * model.layout.tensors.len());
    // Some gradients must be clearly non-zero, or the check proves nothing.
    let norm: f32 = grads.iter().map(|g| g * g).sum::<f32>().sqrt();
    assert!(norm > 0.1, "gradient norm {norm}");
}

#[test]
fn gpt2_layout_pre_norm_gelu_tied() {
    check(config(Norm::Pre, Activation::Gelu, true, 0.0));
}

#[test]
fn course_layout_post_norm_relu_untied() {
    check(config(Norm::Post, Activation::Relu, false, 0.0));
}

#[test]
fn with_dropout_everywhere() {
    check(config(Norm::Pre, Activation::Gelu, true, 0.3));
    check(config(Norm::Post, Activation::Gelu, false, 0.3));
}

#[test]
fn bigram() {
    let cfg = ModelConfig {
        arch: Arch::Bigram,
        ..config(Norm::Pre, Activation::Gelu, true, 0.0)
    };
    check(cfg);
}
