//! `lmforge chat`: talk to a trained run in the terminal (or answer piped lines).

use super::Selected;
use lmforge::backend::{Device, WeightType};
use lmforge::chat::ChatOptions;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ChatArgs {
    /// Run directory written by `lmforge train`, or a `.gguf` file (converted to
    /// f32 weights at load). A model whose tokenizer has the chat
    /// template's special tokens talks through it; a base model continues your text,
    /// each reply ending at a blank line.
    run: PathBuf,
    /// Most tokens in one reply.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    #[command(flatten)]
    sampling: super::sample::SamplingArgs,
    /// The system message to start with (also: /system TEXT).
    #[arg(long)]
    system: Option<String>,
    /// Line history file (default: ~/.lmforge_history).
    #[arg(long)]
    history: Option<PathBuf>,
    /// After each reply, print the time to first token and tokens/s (to stderr).
    #[arg(long)]
    stats: bool,
    /// Before each reply, print the prompt's token count and text (to stderr).
    #[arg(long)]
    verbose: bool,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Compute device.
    #[arg(long, value_enum, default_value = "cpu")]
    device: Device,
    /// Keep the weights in this type while decoding: f32, bf16, or ggml's q8_0 / q4_0
    /// blocks (8.5 and 4.5 bits a value). Matrices are converted at load and no f32
    /// copy of them is kept; norms, biases and positions stay f32. CPU only.
    /// Default: f32 for a run directory; for a .gguf file its own type (q8_0, q4_0,
    /// bf16; f32 for F32/F16 files), and q8_0 for K-quant files (lmforge has no
    /// K-quant kernels: their tensors are re-packed to q8_0 at load).
    #[arg(long, value_enum)]
    weights: Option<WeightType>,
}

pub fn run(args: ChatArgs) -> anyhow::Result<ExitCode> {
    let sampling = args.sampling.options(args.max_new_tokens)?;
    let backend = super::backend(args.device, args.threads)?;
    let run = lmforge::gguf::open_run(&args.run, args.weights)?;
    let history = args.history.or_else(|| {
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".lmforge_history"))
    });
    let opts = ChatOptions {
        sampling,
        system: args.system,
        history,
        stats: args.stats,
        verbose: args.verbose,
        weights: args.weights,
    };
    match backend {
        Selected::Cpu(cpu) => lmforge::chat::run(&cpu, run.path(), opts)?,
        Selected::Cuda(gpu) => lmforge::chat::run(gpu.as_ref(), run.path(), opts)?,
    }
    Ok(ExitCode::SUCCESS)
}
