//! `lmforge bench train`: the speed of full training steps (forward,
//! backward, AdamW) on random tokens, with the trainer's own step.

use super::config::TrainConfig;
use super::trainer::Trainer;
use crate::backend::Backend;
use crate::error::{Error, Result};
use std::time::Instant;

/// Speed of full training steps (forward, backward, AdamW) on random tokens.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub num_params: usize,
    /// Median over the timed steps.
    pub tokens_per_sec: f64,
    pub step_ms: f64,
    /// Peak resident memory of the process (Linux), in MiB.
    pub peak_rss_mib: Option<f64>,
}

/// Time `steps` training steps after `warmup` untimed ones, for the model in
/// `config` with a vocabulary of `vocab_size` tokens.
pub fn bench<B: Backend>(
    be: &B,
    config: &TrainConfig,
    vocab_size: usize,
    warmup: u64,
    steps: u64,
) -> Result<BenchReport> {
    config.validate()?;
    if steps == 0 {
        return Err(Error::Config("--steps must be at least 1".into()));
    }
    let mut config = config.clone();
    config.model.vocab_size = vocab_size;
    let mut rng = crate::rng::Rng::new(config.seed, 77);
    let tokens: Vec<u32> = (0..(config.model.block_size + 1) * 64)
        .map(|_| rng.below(vocab_size as u64) as u32)
        .collect();
    let mut trainer = Trainer::new(be, &config, (&tokens, &tokens), None, None)?;
    let mut times = Vec::with_capacity(steps as usize);
    for step in 0..warmup + steps {
        let t0 = Instant::now();
        trainer.step(step)?;
        if step >= warmup {
            times.push(t0.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let tokens_per_step = config.batch_size * config.model.block_size * config.grad_accum;
    Ok(BenchReport {
        num_params: trainer.model.num_params(),
        tokens_per_sec: tokens_per_step as f64 / median,
        step_ms: median * 1e3,
        peak_rss_mib: peak_rss_mib(),
    })
}

/// `VmHWM` from `/proc/self/status`: the most resident memory the process has used.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
