//! Whole training steps on the GPU against the CPU, through the trainer
//! both share: the same tiny model, seed and batches on both backends.
//! The same for a Llama (RMSNorm, RoPE, grouped-query attention, SwiGLU on
//! the device). And the copies between host and device in a step, counted.
//! Skipped without a GPU.
//!
//! Tolerance: float32 on both, summed in different orders; over five AdamW
//! steps the losses agree to 1e-4 (relative) and the weights to 1e-4 +
//! 1e-3 relative (Adam divides by sqrt(v), which magnifies the tiny
//! differences of near-zero gradients).

mod gpu;

use lmforge::backend::Backend;
use lmforge::backend::cpu::Cpu;
use lmforge::backend::cuda::Cuda;
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

/// Llama-char's shape, shrunk: 2 layers, 4 query heads over 2 key/value heads.
fn tiny_llama_config() -> TrainConfig {
    let mut config = Preset::LlamaChar.config();
    config.model.vocab_size = 65;
    config.model.n_layer = 2;
    config.model.block_size = 32;
    config.batch_size = 4;
    config.grad_accum = 2;
    config
}

fn same_run(dropout: f32) {
    same_run_of(tiny_config(dropout));
}

fn same_run_of(config: TrainConfig) {
    let dropout = config.model.dropout;
    let Some(gpu) = gpu::cuda() else { return };
    lmforge::backend::cpu::init_threads(Some(2)).ok();
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

#[test]
fn five_llama_steps_match_the_cpu() {
    let config = tiny_llama_config();
    assert!(
        config.model.n_kv_head() < config.model.n_head,
        "grouped-query heads"
    );
    same_run_of(config);
}

/// Per step only the batch's ids go up (inputs and targets), and the loss
/// and the gradient norm's partial sums come down: at most 4 copies, and
/// their bytes are those of the ids, two f64s and one f64 per 16384
/// gradients. A layer run on the host would add copies of activations.
fn transfers_per_step(config: TrainConfig) {
    let Some(gpu) = gpu::cuda() else { return };
    let tokens: Vec<u32> = (0..20_000u32).map(|i| (i * 7 + i / 13) % 65).collect();
    let mut trainer = Trainer::new(&gpu, &config, (&tokens, &tokens), None, None).unwrap();
    trainer.step(0).unwrap();
    let n_params = Cuda::len(trainer.params()) as u64;
    let ids = (config.batch_size * config.model.block_size * 4) as u64;
    let most_bytes = 2 * ids + 16 + 8 * n_params.div_ceil(lmforge::backend::NORM_CHUNK as u64);
    for step in 1..4 {
        let before = gpu.transfers();
        trainer.step(step).unwrap();
        let after = gpu.transfers();
        let (count, bytes) = (after.count - before.count, after.bytes - before.bytes);
        eprintln!("step {step}: {count} copies, {bytes} bytes (at most 4, {most_bytes})");
        assert!(
            (3..=4).contains(&count),
            "step {step}: {count} copies between host and device, expected 3 or 4"
        );
        assert!(
            bytes <= most_bytes,
            "step {step}: {bytes} bytes copied, more than the ids, loss and norm ({most_bytes})"
        );
    }
}

#[test]
fn a_gpt_step_copies_only_ids_loss_and_norm() {
    let mut config = tiny_config(0.1);
    config.grad_accum = 1;
    transfers_per_step(config);
}

#[test]
fn a_llama_step_copies_only_ids_loss_and_norm() {
    let mut config = tiny_llama_config();
    config.grad_accum = 1;
    transfers_per_step(config);
}
