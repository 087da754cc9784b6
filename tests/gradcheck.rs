//! Finite-difference check of the whole model's backward pass, through the
//! backend seam: for a sample of parameters, compare the analytic gradient
//! with (loss(p + h) - loss(p - h)) / 2h, computed in f32 with h = 1e-2
//! (1e-3 across ReLU's kink). Dropout is on: its masks are a function of
//! (seed, step key), so the loss is the same deterministic function of the
//! parameters in every evaluation.
//!
//! Tolerance: |analytic - numeric| <= atol + 1e-2 |numeric|, atol = 1e-4
//! (5e-4 with ReLU's smaller step). The worst differences seen are 4e-5
//! (1.4e-4 with ReLU) absolute and 1% relative (f32 rounding in
//! `loss(p ± h)`, about 1e-7 * loss / h, and the h^2 truncation): a margin
//! of about 3x, which still fails a wrong sign, a missing term, a dropped
//! residual or a gradient 2% off. Two more checks keep the test honest: at
//! least half the sampled entries must have a gradient above 10 atol (else
//! agreement proves nothing), and the same comparison must reject the
//! analytic gradients scaled by 0.9 for nearly all of those.

use lmforge::backend::Backend;
mod gpu;

use lmforge::backend::cpu::Cpu;
use lmforge::model::{
    Activation, Activations, Arch, Grads, LlamaConfig, LoraConfig, LoraTarget, Mode, Model,
    ModelConfig, Norm, ParamLayout, RopeScaling, Window,
};
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
        llama: None,
        lora: None,
    }
}

/// Parameters larger than at init, so every path carries signal.
fn random_params(model: &Model, rng: &mut Rng) -> Vec<f32> {
    let mut params: Vec<f32> = (0..model.num_params())
        .map(|_| (rng.next_f32() - 0.5) * 0.8)
        .collect();
    for spec in &model.layout.tensors {
        let norm = spec.name.contains("ln_") || spec.name.contains("norm");
        if norm && spec.name.ends_with("weight") {
            params[spec.range.clone()]
                .iter_mut()
                .for_each(|w| *w += 1.0);
        }
    }
    params
}

/// How the analytic gradients compared with the finite differences.
struct Comparison {
    checked: usize,
    /// Entries outside the tolerance, with a description of the first.
    failures: usize,
    first_failure: Option<String>,
    /// Entries whose numeric gradient is clearly non-zero.
    significant: usize,
}

fn compare(
    model: &Model,
    grads: &[f32],
    numeric: &[(usize, f32)],
    scale: f32,
    atol: f32,
) -> Comparison {
    let mut c = Comparison {
        checked: 0,
        failures: 0,
        first_failure: None,
        significant: 0,
    };
    for &(i, num) in numeric {
        let analytic = grads[i] * scale;
        c.checked += 1;
        c.significant += (num.abs() > 10.0 * atol) as usize;
        if (analytic - num).abs() > atol + 1e-2 * num.abs() {
            c.failures += 1;
            let spec = model.layout.tensors.iter().find(|s| s.range.contains(&i));
            let name = spec.map_or("?", |s| s.name.as_str());
            c.first_failure.get_or_insert_with(|| {
                format!("{name} [{i}]: analytic {analytic} vs numeric {num}")
            });
        }
    }
    c
}

fn check<B: Backend>(be: &B, cfg: ModelConfig) {
    check_trained(be, cfg, |_| 0);
}

/// As [`check`], with the parameters before `frozen(layout)` frozen: only
/// the trained ones get (and are checked for) gradients.
fn check_trained<B: Backend>(be: &B, cfg: ModelConfig, frozen: impl Fn(&ParamLayout) -> usize) {
    let model = Model::new(cfg.clone()).unwrap();
    let from = frozen(&model.layout);
    let (b, t) = (2, 6);
    let window = Window::batch(b, t);
    let mut rng = Rng::new(42, 0);
    let mut host = random_params(&model, &mut rng);
    let v = cfg.vocab_size as u64;
    let idx: Vec<u32> = (0..b * t).map(|_| rng.below(v) as u32).collect();
    let targets: Vec<u32> = (0..b * t).map(|_| rng.below(v) as u32).collect();
    let mode = Mode::Train {
        seed: 7,
        step_key: 3,
    };
    let mut acts = Activations::training(be, &model.config, b, t).unwrap();
    let mut loss_at = |host: &[f32]| {
        let params = be.upload(host.to_vec()).unwrap();
        model.forward(be, &params, &mut acts, &idx, window, mode);
        model.loss(be, &mut acts, &targets, window) as f64
    };
    // ReLU has a kink at 0: a smaller step is less likely to cross it, at
    // the price of 10x the rounding error in the difference.
    let (h, atol) = match cfg.activation {
        Activation::Relu => (1e-3f32, 5e-4),
        Activation::Gelu | Activation::Silu => (1e-2, 1e-4),
    };
    let mut numeric = Vec::new();
    let per_tensor = (64 / model.layout.tensors.len()).max(4);
    for spec in model
        .layout
        .tensors
        .iter()
        .filter(|t| t.range.start >= from)
    {
        // A few entries of every trained tensor, spread over it.
        for k in 0..per_tensor {
            let i = spec.range.start + (k * 7919 + 3) % spec.range.len();
            let saved = host[i];
            host[i] = saved + h;
            let plus = loss_at(&host);
            host[i] = saved - h;
            let minus = loss_at(&host);
            host[i] = saved;
            numeric.push((i, ((plus - minus) / (2.0 * h as f64)) as f32));
        }
    }
    let params = be.upload(host).unwrap();
    let mut acts = Activations::training(be, &model.config, b, t).unwrap();
    let mut grads = Grads::new(be, from, model.num_params()).unwrap();
    model.forward(be, &params, &mut acts, &idx, window, mode);
    let dloss = 1.0 / (b * t) as f32;
    model.backward(
        be, &params, &mut grads, &mut acts, &targets, window, mode, dloss,
    );
    let mut grads_host = vec![0.0; model.num_params()];
    let n = model.num_params();
    be.download(B::view(&grads.buf, 0..n - from), &mut grads_host[from..]);

    let exact = compare(&model, &grads_host, &numeric, 1.0, atol);
    assert_eq!(exact.failures, 0, "{:?} ({cfg:?})", exact.first_failure);
    assert!(
        exact.significant * 2 >= exact.checked,
        "only {} of {} sampled gradients are clearly non-zero: the check proves little",
        exact.significant,
        exact.checked
    );
    let wrong = compare(&model, &grads_host, &numeric, 0.9, atol);
    assert!(
        wrong.failures * 10 >= wrong.significant * 9,
        "gradients 10% too small pass {} of {} significant entries: the tolerance is too loose",
        wrong.significant - wrong.failures,
        wrong.significant
    );
}

#[test]
fn gpt2_layout_pre_norm_gelu_tied() {
    check(&Cpu::new(), config(Norm::Pre, Activation::Gelu, true, 0.0));
}

#[test]
fn course_layout_post_norm_relu_untied() {
    check(
        &Cpu::new(),
        config(Norm::Post, Activation::Relu, false, 0.0),
    );
}

#[test]
fn with_dropout_everywhere() {
    check(&Cpu::new(), config(Norm::Pre, Activation::Gelu, true, 0.3));
    check(
        &Cpu::new(),
        config(Norm::Post, Activation::Gelu, false, 0.3),
    );
}

#[test]
fn bigram() {
    let cfg = ModelConfig {
        arch: Arch::Bigram,
        ..config(Norm::Pre, Activation::Gelu, true, 0.0)
    };
    check(&Cpu::new(), cfg);
}

/// LoRA adapters on every target: their gradients (the only trained
/// tensors) match finite differences of the loss through `W + s·AᵀBᵀ`.
#[test]
fn lora_adapters_on_every_target() {
    for norm in [Norm::Pre, Norm::Post] {
        let cfg = ModelConfig {
            lora: Some(LoraConfig {
                rank: 2,
                alpha: 3.0,
                targets: vec![LoraTarget::CAttn, LoraTarget::CProj, LoraTarget::CFc],
            }),
            ..config(norm, Activation::Gelu, true, 0.0)
        };
        check_trained(&Cpu::new(), cfg, |layout| layout.base_total);
    }
}

/// Frozen embeddings and first block: backward stops above them, and the
/// trained tensors' gradients are still exact.
#[test]
fn frozen_embeddings_and_first_block() {
    let cfg = config(Norm::Pre, Activation::Gelu, false, 0.0);
    check_trained(&Cpu::new(), cfg, |layout| layout.blocks[1].start());
}

/// A Llama-family model: 4 query heads sharing 2 key/value heads, RMS
/// norms, rotary positions, SwiGLU; with and without Qwen2's q/k/v bias, tied
/// and untied, each rope scaling.
fn llama(qkv_bias: bool, tie: bool, rope_scaling: RopeScaling, dropout: f32) -> ModelConfig {
    ModelConfig {
        arch: Arch::Llama,
        n_head: 4,
        n_embd: 16,
        bias: false,
        qkv_bias,
        lm_head_bias: false,
        activation: Activation::Silu,
        tie_embeddings: tie,
        llama: Some(LlamaConfig {
            n_kv_head: 2,
            intermediate_size: 24,
            rope_theta: 100.0,
            rope_scaling,
            rms_norm_eps: 1e-5,
        }),
        ..config(Norm::Pre, Activation::Silu, tie, dropout)
    }
}

#[test]
fn llama_grouped_query_attention_untied() {
    check(&Cpu::new(), llama(false, false, RopeScaling::None, 0.0));
}

#[test]
fn qwen2_qkv_bias_tied_linear_rope() {
    let linear = RopeScaling::Linear { factor: 2.0 };
    check(&Cpu::new(), llama(true, true, linear, 0.0));
}

/// LoRA on every Llama target, each an adapter on its part of a fused
/// layer (q, k, v of `c_attn`; gate, up of `c_fc`) or on a whole one.
#[test]
fn lora_on_every_llama_target() {
    use LoraTarget::*;
    let targets = vec![QProj, KProj, VProj, OProj, GateProj, UpProj, DownProj];
    let cfg = ModelConfig {
        lora: Some(LoraConfig {
            rank: 2,
            alpha: 3.0,
            targets,
        }),
        ..llama(true, false, RopeScaling::None, 0.2)
    };
    check_trained(&Cpu::new(), cfg, |layout| layout.base_total);
}

#[test]
fn llama3_rope_with_dropout() {
    let llama3 = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 4,
    };
    check(&Cpu::new(), llama(false, false, llama3, 0.2));
}

// The same checks through the CUDA backend (skipped without a GPU).

#[test]
fn gpt2_layout_on_cuda() {
    if let Some(gpu) = gpu::cuda() {
        check(&gpu, config(Norm::Pre, Activation::Gelu, true, 0.0));
    }
}

#[test]
fn course_layout_on_cuda() {
    if let Some(gpu) = gpu::cuda() {
        check(&gpu, config(Norm::Post, Activation::Relu, false, 0.0));
    }
}

#[test]
fn with_dropout_on_cuda() {
    if let Some(gpu) = gpu::cuda() {
        check(&gpu, config(Norm::Pre, Activation::Gelu, true, 0.3));
    }
}

#[test]
fn llama_grouped_query_attention_on_cuda() {
    if let Some(gpu) = gpu::cuda() {
        check(&gpu, llama(false, false, RopeScaling::None, 0.0));
    }
}
