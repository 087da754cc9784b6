//! Whole training steps on the GPU against the CPU, through the trainer
//! both share: the same tiny model, seed and batches on both backends.
//! Skipped without a GPU.
//!
//! Tolerance: float32 on both, summed in different orders; over five AdamW
//! steps the losses agree to 1e-4 (relative) and the weights to 1e-4 +
//! 1e-3 relative (Adam divides by sqrt(v), which magnifies the tiny
//! differences of near-zero gradients).

mod gpu;

use lmforge::backend::Backend;
use lmforge::backend::cpu::Cpu;
use lmforge::train::{Preset, TrainConfig, Trainer};

fn tiny_config(dropout: f32) -> TrainConfig {
    let mut config = Preset::CharCpu.config();
    config.model.vocab_size = 65;
    config.model.n_layer = 2;
    config.model.n_embd = 64;
    config.model.n_head = 4;
    config.model.block_size = 32;
    config.model.dropout = dropout;
    config.batch_size = 4;
    config.grad_accum = 2;
    config
}

/// Five steps' losses and the weights after them.
fn train<B: Backend>(be: &B, config: &TrainConfig) -> (Vec<f32>, Vec<f32>) {
    let tokens: Vec<u32> = (0..20_000u32).map(|i| (i * 7 + i / 13) % 65).collect();
    let mut trainer = Trainer::new(be, config, (&tokens, &tokens), None, None).unwrap();
    let losses = (0..5).map(|s| trainer.step(s).unwrap()).collect();
    let n = B::len(trainer.params());
    let mut params = vec![0.0; n];
    be.download(B::view(trainer.params(), 0..n), &mut params);
    (losses, params)
}

fn same_run(dropout: f32) {
    let Some(gpu) = gpu::cuda() else { return };
    lmforge::backend::cpu::init_threads(Some(2)).ok();
    let config = tiny_config(dropout);
    let (cpu_losses, cpu_params) = train(&Cpu::new(), &config);
    let (gpu_losses, gpu_params) = train(&gpu, &config);
    eprintln!(
        "dropout {dropout}: CPU losses {cpu_losses:?}\n             GPU losses {gpu_losses:?}"
    );
    for (step, (g, c)) in gpu_losses.iter().zip(&cpu_losses).enumerate() {
        assert!(
            (g - c).abs() <= 1e-4 * c.abs(),
            "step {step}: loss {g} on the GPU, {c} on the CPU"
        );
    }
    assert!(
        cpu_losses[4] < cpu_losses[0],
        "the model learns: {cpu_losses:?}"
    );
    let worst = gpu_params
        .iter()
        .zip(&cpu_params)
        .map(|(g, c)| (g - c).abs() - (1e-4 + 1e-3 * c.abs()))
        .fold(f32::NEG_INFINITY, f32::max);
    assert!(
        worst <= 0.0,
        "weights after 5 steps differ by {worst} beyond the tolerance"
    );
}

#[test]
fn five_steps_match_the_cpu() {
    same_run(0.0);
}

#[test]
fn five_steps_with_dropout_match_the_cpu() {
    same_run(0.1);
}
