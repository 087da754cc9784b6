//! `lmforge bench train`: training speed on synthetic tokens.

use lmforge::train::{TrainOverrides, config};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

#[derive(clap::Subcommand)]
enum BenchWhat {
    /// Time full training steps (forward, backward, AdamW) on random tokens.
    Train(BenchTrainArgs),
}

#[derive(clap::Args)]
struct BenchTrainArgs {
    /// Model and batch shape to measure.
    #[arg(long, default_value = "char-cpu")]
    preset: String,
    /// Vocabulary size (65 is Tiny Shakespeare's characters).
    #[arg(long, default_value_t = 65)]
    vocab: usize,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 20)]
    steps: u64,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    warmup_steps: u64,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    #[command(flatten)]
    overrides: TrainOverrides,
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let BenchWhat::Train(args) = args.what;
    let threads = lmforge::backend::cpu::init_threads(args.threads)?;
    let cfg = config::resolve(&args.preset, None, &args.overrides)?;
    let report = lmforge::train::bench(&cfg, args.vocab, args.warmup_steps, args.steps)?;
    println!(
        "lmforge {}: {} params, batch {} x block {}, {threads} threads",
        args.preset, report.num_params, cfg.batch_size, cfg.block_size
    );
    println!("lmforge tokens/s: {:.0}", report.tokens_per_sec);
    println!("lmforge step ms: {:.1}", report.step_ms);
    if let Some(mib) = report.peak_rss_mib {
        println!("lmforge peak RSS MiB: {mib:.0}");
    }
    Ok(ExitCode::SUCCESS)
}
