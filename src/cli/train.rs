//! `lmforge train`: train a model, or resume a run.

use super::Selected;
use anyhow::Context;
use lmforge::backend::cpu::Dtype;
use lmforge::backend::cuda::MatmulPrecision;
use lmforge::backend::{Backend, Device};
use lmforge::dist::World;
use lmforge::model::LoraTarget;
use lmforge::train::{
    FineTuneOptions, Observe, OnNan, Parallel, Preset, Safeguards, Start, TrainJob, TrainOverrides,
    TrainRequest,
};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Training data: a UTF-8 text file, a directory (every file under it),
    /// compressed, tar, JSON Lines or Parquet files as `prepare` reads them (a
    /// BOM is removed and CRLF becomes LF), or a directory of token shards.
    /// Default: the built-in Tiny Shakespeare.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Starting hyperparameters.
    #[arg(long, value_enum)]
    preset: Option<Preset>,
    /// TOML file of hyperparameters (flag names, `_` for `-`), applied over the preset.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run directory for checkpoints and metrics (default: runs/<preset>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint; training
    /// flags given here (e.g. --max-iters) change the saved configuration.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["preset", "out"])]
    resume: Option<PathBuf>,
    /// Worker threads (default: one per core). Same seed + same threads = same losses.
    #[arg(long)]
    threads: Option<usize>,
    /// Compute device.
    #[arg(long, value_enum, default_value = "cpu")]
    device: Device,
    /// How the GPU multiplies matrices: TF32 tensor cores, or full float32.
    #[arg(long, value_enum, default_value = "tf32")]
    matmul_precision: MatmulPrecision,
    /// The CPU's matrix products: float32, or bfloat16 operands with f32
    /// sums (weights, optimizer state and checkpoints stay f32, so a run can
    /// change it on --resume).
    #[arg(long, value_enum, default_value = "f32")]
    dtype: Dtype,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
    /// Replace the run already in --out (its checkpoint and metrics are deleted).
    #[arg(long, conflicts_with = "resume")]
    overwrite: bool,
    /// A step whose loss or gradient norm is NaN or infinite: stop (keeping
    /// the last checkpoint), or skip it without updating the weights.
    #[arg(long, value_enum, default_value = "stop")]
    on_nan: OnNan,
    /// Start even if the model looks too big for the memory available.
    #[arg(long)]
    ignore_memory_check: bool,
    /// Train on a shard directory whose `lmforge prepare` was interrupted
    /// (or still runs): only the inputs it finished.
    #[arg(long)]
    allow_partial: bool,
    #[command(flatten)]
    finetune: FineTuneArgs,
    /// The loss plot redrawn in the run directory at each evaluation:
    /// loss.png, loss.svg, or none.
    #[arg(long, value_name = "png|svg|none", default_value = "png", value_parser = parse_plot)]
    plot: PlotChoice,
    /// At each evaluation, store a short sample of the model's text in the
    /// run's samples.jsonl (shown by `lmforge report`).
    #[arg(long)]
    sample_every_eval: bool,
    /// At each evaluation, score these multiple-choice questions (JSON
    /// Lines, as `lmforge eval --choices` reads) and log their `acc_norm`.
    #[arg(long, value_name = "FILE.jsonl")]
    eval_choices: Option<PathBuf>,
    /// Started as several ranks (mpirun, srun; needs `--features mpi`):
    /// 1 shards AdamW's moments across the ranks (ZeRO-1), 0 keeps them
    /// whole on every rank. The same losses and files either way.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    zero: u8,
    #[command(flatten)]
    overrides: TrainOverrides,
}

/// Fine-tuning: start from a trained model instead of random weights.
#[derive(clap::Args)]
struct FineTuneArgs {
    /// Start from this model: a run directory, a Hugging Face save_pretrained
    /// folder, or a model name in the local Hugging Face cache (`gpt2`).
    /// Uses the `finetune` preset unless --preset is given.
    #[arg(long, value_name = "RUN|DIR|NAME", conflicts_with = "resume")]
    init_from: Option<String>,
    /// Freeze the token and position embeddings (a head tied to them too).
    #[arg(long, requires = "init_from")]
    freeze_embeddings: bool,
    /// Freeze the embeddings and the first N blocks.
    #[arg(long, value_name = "N", default_value_t = 0, requires = "init_from")]
    freeze_layers: usize,
    /// Train low-rank adapters of this rank instead of the weights (LoRA).
    #[arg(long, value_name = "R", requires = "init_from")]
    lora_rank: Option<usize>,
    /// LoRA's alpha: the adapters' product is scaled by alpha / rank (default: 2 x rank).
    #[arg(long, requires = "lora_rank")]
    lora_alpha: Option<f32>,
    /// The layers LoRA adapts, by their Hugging Face names (default: GPT-2's
    /// c_attn,c_proj,c_fc; a Llama's q_proj,v_proj, as PEFT's default).
    #[arg(long, value_enum, value_delimiter = ',', requires = "lora_rank")]
    lora_targets: Option<Vec<LoraTarget>>,
    /// Train on conversations: a JSON Lines file of {"prompt", "response"} or
    /// {"messages": [{"role", "content"}]}; the loss counts the replies only.
    #[arg(
        long,
        value_name = "FILE.jsonl",
        conflicts_with = "data",
        requires = "init_from"
    )]
    sft: Option<PathBuf>,
}

/// The options as the library takes them.
fn request(args: &TrainArgs) -> TrainRequest {
    let ft = &args.finetune;
    TrainRequest {
        data: args.data.clone(),
        preset: args.preset,
        config: args.config.clone(),
        out: args.out.clone(),
        resume: args.resume.clone(),
        overrides: args.overrides.clone(),
        finetune: FineTuneOptions {
            init_from: ft.init_from.clone(),
            freeze_embeddings: ft.freeze_embeddings,
            freeze_layers: ft.freeze_layers,
            lora_rank: ft.lora_rank,
            lora_alpha: ft.lora_alpha,
            lora_targets: ft.lora_targets.clone(),
            sft: ft.sft.clone(),
        },
    }
}

pub fn run(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let world = World::from_env()?;
    let threads = args.threads.or_else(|| threads_per_rank(&world));
    let backend = super::backend_with(args.device, threads, args.matmul_precision, args.dtype)?;
    let (out, data, start) = request(&args).start()?;
    let device_memory = match &backend {
        Selected::Cpu(_) => None,
        Selected::Cuda(gpu) => Some(gpu.info().memory_bytes as u64),
    };
    let guards = Safeguards {
        overwrite: args.overwrite,
        on_nan: args.on_nan,
        ignore_memory_check: args.ignore_memory_check,
        allow_partial: args.allow_partial,
        device_memory,
        dtype: args.dtype,
    };
    let observe = Observe {
        plot: args.plot.0,
        sample_every_eval: args.sample_every_eval,
        eval_choices: args.eval_choices.clone(),
    };
    let parallel = Parallel {
        world: &world,
        zero: args.zero == 1 && world.size() > 1,
    };
    let settings = (args.quiet, guards, observe);
    let result = match backend {
        Selected::Cpu(cpu) => run_training(cpu, parallel, settings, data, out, start),
        Selected::Cuda(gpu) => run_training(*gpu, parallel, settings, data, out, start),
    };
    match result {
        Err(err) if world.size() > 1 => {
            // The other ranks may wait in a collective this one will not join: stop them all.
            eprintln!(
                "error: rank {} of {}: {}",
                world.rank(),
                world.size(),
                super::describe(&err)
            );
            world.abort(1)
        }
        other => other,
    }
}

/// Without --threads, the ranks on one node share its cores.
fn threads_per_rank(world: &World) -> Option<usize> {
    let launch = lmforge::dist::Launch::from_env().filter(|_| world.size() > 1)?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Some((cores / launch.local_size).max(1))
}

fn run_training<B: Backend>(
    backend: B,
    parallel: Parallel,
    (quiet, guards, observe): (bool, Safeguards, Observe),
    data: Option<PathBuf>,
    out: PathBuf,
    start: Start,
) -> anyhow::Result<ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    let handler_flag = stop.clone();
    ctrlc::set_handler(move || {
        if handler_flag.swap(true, Ordering::SeqCst) {
            // Second Ctrl-C: leave now. Checkpoint files are written atomically,
            // so the last complete checkpoint is intact.
            std::process::exit(130);
        }
        eprintln!(
            "\nstopping after this step and saving a checkpoint (Ctrl-C again to quit at once)"
        );
    })
    .context("installing the Ctrl-C handler")?;

    let summary = lmforge::train::train_on(
        &backend,
        parallel,
        TrainJob {
            data,
            out: out.clone(),
            start,
            progress: !quiet,
            stop: &stop,
            guards,
            observe,
        },
    )
    .with_context(|| format!("training into {}", out.display()))?;
    if !parallel.world.is_root() {
        return Ok(ExitCode::from(if summary.interrupted { 130 } else { 0 }));
    }
    eprintln!("{}", closing_line(&summary));
    if summary.interrupted {
        eprintln!("resume with: lmforge train --resume {}", out.display());
        return Ok(ExitCode::from(130));
    }
    let next = if is_chat_model(&out) {
        "chat"
    } else {
        "sample"
    };
    eprintln!("{next} with: lmforge {next} {}", out.display());
    Ok(ExitCode::SUCCESS)
}

/// Whether the run in `dir` talks in turns (a chat template or lmforge's
/// chat tokens), so `chat` is the command to suggest rather than `sample`.
fn is_chat_model(dir: &std::path::Path) -> bool {
    let tokenizer = lmforge::tokenizer::load(&dir.join(lmforge::checkpoint::TOKENIZER_FILE));
    tokenizer.is_ok_and(|tok| {
        matches!(
            lmforge::chat::ChatFormat::find(dir, tok.as_ref()),
            Ok(Some(_))
        )
    })
}

/// `--plot`: a picture format, or none.
#[derive(Clone, Copy)]
struct PlotChoice(Option<lmforge::plot::Format>);

fn parse_plot(text: &str) -> Result<PlotChoice, String> {
    match text {
        "png" => Ok(PlotChoice(Some(lmforge::plot::Format::Png))),
        "svg" => Ok(PlotChoice(Some(lmforge::plot::Format::Svg))),
        "none" => Ok(PlotChoice(None)),
        other => Err(format!("{other:?}: expected png, svg or none")),
    }
}

/// The run's last line: the step it ended at, and the losses of the last
/// evaluation with that evaluation's own step when it came earlier (a run
/// stopped with Ctrl-C between evaluations).
fn closing_line(summary: &lmforge::train::TrainSummary) -> String {
    let fmt = |loss: Option<f32>| loss.map_or("-".to_string(), |l| format!("{l:.4}"));
    let losses = format!(
        "train loss {}, val loss {}",
        fmt(summary.train_loss),
        fmt(summary.val_loss)
    );
    let speed = format!("{:.0} tokens/s", summary.tokens_per_sec);
    match summary.eval_step {
        Some(at) if at == summary.step => format!("step {at}: {losses}, {speed}"),
        Some(at) => format!(
            "step {}, {speed}; last evaluation at step {at}: {losses}",
            summary.step
        ),
        None => format!("step {}: not evaluated, {speed}", summary.step),
    }
}
