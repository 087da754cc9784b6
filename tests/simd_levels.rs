//! Every instruction set level this CPU has (`portable`, `avx2`, `avx512`;
//! see `src/backend/cpu/simd.rs`), forced in turn with `simd::set_level`:
//!
//! - the register kernels (`few_rows`: decoding's products, 1 to 16 rows) against
//!   the slow reference twin `matmul_naive`, to 5e-4 (sums of 301 products
//!   of size <= 1: each rounding is at most ~2e-6, typically the difference
//!   is ~1e-5), and bit for bit from one run to the next at each level;
//! - bf16 products (`bf16::matmul`: AVX512_BF16's `vdpbf16ps` at `avx512`
//!   where the CPU has it, portable code otherwise) give the same bits at
//!   every level as the naive twin: the portable code adds in the
//!   instruction's order, and the products of bf16 numbers are exact;
//! - a whole training step (forward, loss, backward, AdamW) of a GPT and a
//!   Llama layout gives the *same bits* at every level
//!   as at `portable`: element-wise kernels are compiled once per level but
//!   the compiler keeps their order of float operations, and `gemm` chooses
//!   its own kernel whatever the level. The other test binaries
//!   (`gradcheck`, `pytorch_fixtures`) check the level this CPU picks, so
//!   this carries their checks to every level.
//!
//! One test function: the level is global to the process, and nothing else
//! in this binary runs while it changes.

use lmforge::backend::cpu::Cpu;
use lmforge::backend::cpu::bf16::{self, Bf16Panels, Bf16Rows};
use lmforge::backend::cpu::matmul::{MatRef, matmul, matmul_naive};
use lmforge::backend::cpu::simd::{self, Level};
use lmforge::backend::{Accumulate, AdamWStep, Backend, ParamGroup};
use lmforge::model::{
    Activation, Activations, Arch, Grads, LlamaConfig, Mode, Model, ModelConfig, Norm, RopeScaling,
    Window,
};
use lmforge::rng::Rng;

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed, 0);
    (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// `x (m, k) @ W` for `W` stored `(IN, OUT)` and `(OUT, IN)`, every row
/// count `matmul` sends to `few_rows`, on two threads. Large enough (`m k n >= 64^3`) not to go to `gemm`; `k` and `n`
/// not multiples of any vector width or tile.
fn products() -> Vec<Vec<f32>> {
    let (k, n) = (301, 901);
    let w_in_out = random(k * n, 1);
    let w_out_in = random(n * k, 2);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let mut results = Vec::new();
    for m in 1..=16 {
        let x = random(m * k, 10 + m as u64);
        for w in [
            MatRef::new(&w_in_out, k, n),
            MatRef::new(&w_out_in, n, k).t(),
        ] {
            let start = random(m * n, 40 + m as u64);
            let (mut fast, mut slow) = (start.clone(), start);
            let lhs = MatRef::new(&x, m, k);
            pool.install(|| matmul(&mut fast, lhs, w, Accumulate::Add));
            matmul_naive(&mut slow, lhs, w, Accumulate::Add);
            let worst = max_diff(&fast, &slow);
            assert!(worst < 5e-4, "m {m}: max diff {worst} from matmul_naive");
            results.push(fast);
        }
    }
    results
}

/// bf16 products of every tile size (8, 4, 2, 1 rows), odd `k`, `n` past a
/// panel edge; each checked bit for bit against `bf16::matmul_naive`.
fn bf16_products() -> Vec<Vec<f32>> {
    let mut results = Vec::new();
    for (m, k, n) in [(15, 301, 77), (40, 64, 16)] {
        let (x, w) = (random(m * k, 50), random(k * n, 51));
        let a = Bf16Rows::from_f32(MatRef::new(&x, m, k));
        let b = Bf16Panels::from_f32(MatRef::new(&w, k, n));
        let (mut fast, mut slow) = (random(m * n, 52), random(m * n, 52));
        bf16::matmul(&mut fast, &a, &b, Accumulate::Add);
        bf16::matmul_naive(&mut slow, &a, &b, Accumulate::Add);
        assert!(
            fast == slow,
            "bf16 ({m}, {k}, {n}): differs from matmul_naive"
        );
        results.push(fast);
    }
    results
}

fn gpt() -> ModelConfig {
    ModelConfig {
        arch: Arch::Gpt,
        vocab_size: 37,
        block_size: 16,
        n_layer: 2,
        n_head: 2,
        n_embd: 40,
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

fn llama() -> ModelConfig {
    ModelConfig {
        arch: Arch::Llama,
        n_head: 4,
        dropout: 0.0,
        bias: false,
        qkv_bias: false,
        activation: Activation::Silu,
        tie_embeddings: false,
        llama: Some(LlamaConfig {
            n_kv_head: 2,
            intermediate_size: 56,
            rope_theta: 100.0,
            rope_scaling: RopeScaling::None,
            rms_norm_eps: 1e-5,
        }),
        ..gpt()
    }
}

/// The loss, then the parameters after one AdamW update, of one training step.
fn training_step(cfg: ModelConfig) -> (f32, Vec<f32>) {
    let be = Cpu::new();
    let model = Model::new(cfg.clone()).unwrap();
    let (b, t) = (3, 11);
    let n = model.num_params();
    let mut params = random(n, 5);
    params.iter_mut().for_each(|p| *p *= 0.3);
    let mut rng = Rng::new(6, 0);
    let v = cfg.vocab_size as u64;
    let idx: Vec<u32> = (0..b * t).map(|_| rng.below(v) as u32).collect();
    let targets: Vec<u32> = (0..b * t).map(|_| rng.below(v) as u32).collect();
    let (window, mode) = (
        Window::batch(b, t),
        Mode::Train {
            seed: 7,
            step_key: 3,
        },
    );
    let weights = be.upload(params.clone()).unwrap();
    let mut acts = Activations::training(&be, &model.config, b, t).unwrap();
    let mut grads = Grads::new(&be, 0, n).unwrap();
    model.forward(&be, &weights, &mut acts, &idx, window, mode);
    let loss = model.loss(&be, &mut acts, &targets, window);
    let dloss = 1.0 / (b * t) as f32;
    model.backward(
        &be, &weights, &mut grads, &mut acts, &targets, window, mode, dloss,
    );
    let mut g = vec![0.0; n];
    be.download(Cpu::view(&grads.buf, 0..n), &mut g);
    let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
    let step = AdamWStep {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weight_decay: 0.1,
        grad_clip: 1.0,
        t: 1,
    };
    let groups = [ParamGroup {
        range: 0..n,
        decays: true,
    }];
    let norm = g.iter().map(|x| x * x).sum::<f32>().sqrt();
    lmforge::backend::cpu::adamw::update(&mut params, &g, &mut m, &mut v, &groups, step, norm);
    (loss, params)
}

#[test]
fn every_level_matches_the_reference_and_portable() {
    let levels: Vec<Level> = Level::ALL.into_iter().filter(|l| l.available()).collect();
    eprintln!("levels on this CPU: {levels:?}");
    let mut at_portable = None;
    for &level in &levels {
        simd::set_level(level).unwrap();
        assert_eq!(simd::level(), level);
        let first = products();
        assert!(first == products(), "{level:?}: products differ run to run");
        eprintln!(
            "{level:?}: bf16 products in hardware: {}",
            simd::pairs_in_hardware()
        );
        let bf16 = bf16_products();
        let steps = (training_step(gpt()), training_step(llama()));
        assert!(steps.0.0.is_finite() && steps.1.0.is_finite());
        assert_eq!(steps, (training_step(gpt()), training_step(llama())));
        // Not the vector products: `few_rows` adds 8 or 16 lanes, fused.
        match &at_portable {
            None => at_portable = Some((steps, bf16)),
            Some(portable) => {
                assert!(portable.0 == steps, "{level:?}: training step differs");
                assert!(portable.1 == bf16, "{level:?}: bf16 products differ");
            }
        }
    }
    if let Some(missing) = Level::ALL.into_iter().find(|l| !l.available()) {
        let err = simd::set_level(missing).unwrap_err().to_string();
        assert!(err.contains(missing.name()), "{err}");
    }
}
