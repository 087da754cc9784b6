//! `lmforge bench train` and `bench sample`: training and generation speed with synthetic tokens and random weights.

use anyhow::Context;
use lmforge::backend::WeightType;
use lmforge::backend::cpu::Dtype;
use lmforge::backend::cuda::MatmulPrecision;
use lmforge::backend::{Backend, Device};
use lmforge::model::PackedWeights;
use lmforge::sample::load::LoadedWeights;
use lmforge::tokenizer::TokenizerSpec;
use lmforge::train::{Preset, TrainConfig, TrainOverrides, config};
use std::path::PathBuf;
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
    /// Time text generation with random weights, with and without the KV cache.
    Sample(BenchSampleArgs),
    /// Time scoring (`lmforge eval`) against decoding and against one forward pass.
    Eval(BenchEvalArgs),
}

#[derive(clap::Args)]
struct BenchEvalArgs {
    /// Model shape to measure.
    #[arg(long, value_enum, default_value = "gpt2")]
    preset: Preset,
    /// Vocabulary size (default: the preset tokenizer's).
    #[arg(long)]
    vocab: Option<usize>,
    /// Tokens decoded for the decoding speed.
    #[arg(long, default_value_t = 64)]
    decode_tokens: usize,
    /// Full windows scored for the scoring speed.
    #[arg(long, default_value_t = 2)]
    windows: usize,
    /// HellaSwag-layout questions (four endings each) scored.
    #[arg(long, default_value_t = 1000)]
    examples: usize,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Compute device.
    #[arg(long, value_enum, default_value = "cpu")]
    device: Device,
    #[command(flatten)]
    overrides: TrainOverrides,
}

#[derive(clap::Args)]
struct BenchSampleArgs {
    /// Model shape to measure.
    #[arg(long, value_enum, default_value = "gpt2")]
    preset: Preset,
    /// Vocabulary size (default: the preset tokenizer's; 65, Tiny
    /// Shakespeare's characters, for `char`).
    #[arg(long)]
    vocab: Option<usize>,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 16)]
    prompt_tokens: usize,
    /// Tokens to generate.
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    /// Also time batched decoding of this many sequences at once (one
    /// forward over all of them per step, as `lmforge serve` runs its clients).
    #[arg(long)]
    streams: Option<usize>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Keep the weights in this type while decoding: f32, bf16, or ggml's q8_0 / q4_0
    /// blocks (8.5 and 4.5 bits a value). Matrices are converted at load and no f32
    /// copy of them is kept; norms, biases and positions stay f32. CPU only.
    /// Default: f32, or with --model a .gguf file's own type (as `lmforge sample`).
    #[arg(long, value_enum)]
    weights: Option<WeightType>,
    /// Time this run's (or `.gguf` file's) own weights instead of random ones of
    /// --preset's shape: prompt processing and decoding, without the no-cache figure.
    #[arg(long, value_name = "RUN|FILE.gguf")]
    model: Option<PathBuf>,
    #[command(flatten)]
    overrides: TrainOverrides,
}

#[derive(clap::Args)]
struct BenchTrainArgs {
    /// Model and batch shape to measure.
    #[arg(long, value_enum, default_value = "char-cpu")]
    preset: Preset,
    /// Vocabulary size (default: the preset tokenizer's; 65, Tiny
    /// Shakespeare's characters, for `char`).
    #[arg(long)]
    vocab: Option<usize>,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 20)]
    steps: u64,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    warmup_steps: u64,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Compute device.
    #[arg(long, value_enum, default_value = "cpu")]
    device: Device,
    /// How the GPU multiplies matrices: TF32 tensor cores, or full float32.
    #[arg(long, value_enum, default_value = "tf32")]
    matmul_precision: MatmulPrecision,
    /// The CPU's matrix products: float32, or bfloat16 operands with f32 sums.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: Dtype,
    #[command(flatten)]
    overrides: TrainOverrides,
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.what {
        BenchWhat::Train(args) => train(args),
        BenchWhat::Sample(args) => sample(args),
        BenchWhat::Eval(args) => eval(args),
    }
}

fn eval(args: BenchEvalArgs) -> anyhow::Result<ExitCode> {
    match super::backend(args.device, args.threads)? {
        super::Selected::Cpu(cpu) => eval_on(&cpu, args),
        super::Selected::Cuda(gpu) => eval_on(gpu.as_ref(), args),
    }
}

fn eval_on<B: Backend>(backend: &B, args: BenchEvalArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = config::resolve(args.preset, None, &args.overrides)?;
    cfg.model.vocab_size = vocab_size(args.vocab, &cfg)?;
    let model = lmforge::model::Model::new(cfg.model.clone())?;
    let params = backend.upload(model.init_params(cfg.seed))?;
    let sizes = (args.decode_tokens, args.windows, args.examples);
    let bar = super::eval::ProgressLine::new(true);
    let r = lmforge::eval::bench::bench(backend, &model, &params, sizes, |stage, done, all| {
        bar.show(stage, done, all)
    })?;
    bar.finish();
    println!(
        "lmforge {}: {} params, vocab {}, context {}, {} threads",
        args.preset,
        model.num_params(),
        cfg.model.vocab_size,
        cfg.model.block_size,
        rayon::current_num_threads()
    );
    println!("decode tokens/s: {:.1}", r.decode_tokens_per_s);
    println!(
        "scoring tokens/s: {:.1} ({:.1}x decoding)",
        r.score_tokens_per_s,
        r.score_tokens_per_s / r.decode_tokens_per_s
    );
    println!(
        "{} HellaSwag-layout questions ({} tokens): {:.2} s; one forward over as many tokens: {:.2} s ({:.2}x)",
        args.examples,
        r.choice_tokens,
        r.choices_s,
        r.forward_s,
        r.choices_s / r.forward_s
    );
    Ok(ExitCode::SUCCESS)
}

/// Characters in Tiny Shakespeare: the vocabulary a `char` preset is measured with.
const CHAR_VOCAB: usize = 65;

/// `--vocab`, or the vocabulary of the configured tokenizer: GPT-2's 50257
/// for `gpt2` (the `gpt2` preset), a `tokenizer.json`'s own size, or
/// [`CHAR_VOCAB`] for `char`.
fn vocab_size(vocab: Option<usize>, cfg: &TrainConfig) -> anyhow::Result<usize> {
    Ok(match (vocab, &cfg.tokenizer) {
        (Some(v), _) => v,
        (None, TokenizerSpec::Char) => CHAR_VOCAB,
        (None, spec) => spec.load()?.vocab_size(),
    })
}

fn sample(args: BenchSampleArgs) -> anyhow::Result<ExitCode> {
    let (backend, threads) = super::cpu_backend(args.threads)?;
    let (what, model, loaded) = match &args.model {
        Some(path) => {
            let loading = || format!("loading {}", path.display());
            let run = lmforge::gguf::open_run(path, args.weights).with_context(loading)?;
            let (model, loaded, _) =
                lmforge::sample::load_run_as(&backend, run.path(), args.weights)
                    .with_context(loading)?;
            (path.display().to_string(), model, loaded)
        }
        None => {
            let mut cfg = config::resolve(args.preset, None, &args.overrides)?;
            cfg.model.vocab_size = vocab_size(args.vocab, &cfg)?;
            let model = lmforge::model::Model::new(cfg.model.clone())?;
            let params = backend.upload(model.init_params(cfg.seed))?;
            let packed = match args.weights.unwrap_or(WeightType::F32) {
                WeightType::F32 => None,
                ty => Some(PackedWeights::from_params(&backend, &model, &params, ty)?),
            };
            (
                args.preset.to_string(),
                model,
                LoadedWeights { params, packed },
            )
        }
    };
    let params = loaded.weights();
    let (prompt, new) = (args.prompt_tokens, args.new_tokens);
    let prompt_speed = lmforge::sample::bench_prompt(&backend, &model, params, prompt)?;
    let uncached = args.model.is_none();
    let (cached, uncached) =
        lmforge::sample::bench(&backend, &model, params, (prompt, new), uncached)?;
    println!(
        "lmforge {what}: {} params ({} weights), vocab {}, prompt {prompt} + {new} new tokens, {threads} threads",
        model.num_params(),
        loaded
            .packed
            .as_ref()
            .map_or(WeightType::F32, |p| p.ty())
            .name(),
        model.config.vocab_size,
    );
    println!("lmforge prompt tokens/s: {prompt_speed:.1}");
    println!("lmforge sample tokens/s: {cached:.1}");
    if let Some(uncached) = uncached {
        println!("lmforge sample tokens/s without cache: {uncached:.1}");
    }
    if let Some(streams) = args.streams {
        let one = lmforge::sample::bench_batched(&backend, &model, params, prompt, new, 1)?;
        let all = lmforge::sample::bench_batched(&backend, &model, params, prompt, new, streams)?;
        println!("lmforge batched tokens/s, 1 stream: {one:.1}");
        println!(
            "lmforge batched tokens/s, {streams} streams together: {all:.1} ({:.2}x one stream)",
            all / one
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn train(args: BenchTrainArgs) -> anyhow::Result<ExitCode> {
    let cfg = config::resolve(args.preset, None, &args.overrides)?;
    let vocab = vocab_size(args.vocab, &cfg)?;
    let (report, on) =
        match super::backend_with(args.device, args.threads, args.matmul_precision, args.dtype)? {
            super::Selected::Cpu(cpu) => {
                let report =
                    lmforge::train::bench(&cpu, &cfg, vocab, args.warmup_steps, args.steps)?;
                let dtype = format!("{:?}", cpu.dtype()).to_lowercase();
                let threads = rayon::current_num_threads();
                (report, format!("{threads} threads, {dtype} products"))
            }
            super::Selected::Cuda(gpu) => {
                let report = lmforge::train::bench(
                    gpu.as_ref(),
                    &cfg,
                    vocab,
                    args.warmup_steps,
                    args.steps,
                )?;
                (report, gpu.info().name.clone())
            }
        };
    println!(
        "lmforge {}: {} params, vocab {vocab}, batch {} x block {}, {on}",
        args.preset, report.num_params, cfg.batch_size, cfg.model.block_size
    );
    println!("lmforge tokens/s: {:.0}", report.tokens_per_sec);
    println!("lmforge step ms: {:.1}", report.step_ms);
    if let Some(mib) = report.peak_rss_mib {
        println!("lmforge peak RSS MiB: {mib:.0}");
    }
    Ok(ExitCode::SUCCESS)
}
