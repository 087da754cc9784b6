//! `lmforge sample`: generate text from a trained run, streamed to stdout.

use anyhow::Context;
use lmforge::backend::{Backend, Device, WeightType};
use lmforge::sample::{Flow, SampleOptions};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// The sampling flags, shared by `sample` and `chat`.
#[derive(clap::Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Softmax temperature (0 to 2): below 1 is more conservative, above 1 more random, 0 always picks the likeliest.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Sample only among the k likeliest tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sample only among the likeliest tokens that together hold this probability (nucleus sampling, 0 < p <= 1).
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Drop tokens less likely than this fraction of the likeliest token's probability (0..=1).
    #[arg(long)]
    pub min_p: Option<f32>,
    /// Make tokens already in the context less likely: positive logits are divided by it, negative ones multiplied (1 = off; 1.1-1.3 is typical).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Subtract this from the logit of every token already in the reply (OpenAI's presence_penalty, -2..=2).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub presence_penalty: f32,
    /// Subtract this from a token's logit for each time it is already in the reply (OpenAI's frequency_penalty, -2..=2).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub frequency_penalty: f32,
    /// Stop when the text contains this string (not printed). Repeatable.
    #[arg(long = "stop", value_name = "STRING")]
    pub stop: Vec<String>,
    /// Random seed: the same seed gives the same text.
    #[arg(long, default_value_t = 1337)]
    pub seed: u64,
}

impl SamplingArgs {
    /// The options, with at most `max_new_tokens` new tokens, checked.
    pub fn options(&self, max_new_tokens: usize) -> lmforge::Result<SampleOptions> {
        let opts = SampleOptions {
            max_new_tokens,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            stop: self.stop.clone(),
            seed: self.seed,
            logprobs: None,
        };
        opts.validate()?;
        Ok(opts)
    }
}

#[derive(clap::Args)]
pub struct SampleArgs {
    /// Run directory written by `lmforge train`, or a `.gguf` file (its weights kept in their own type: see --weights).
    run: PathBuf,
    /// Text to continue (default: a newline). Longer than the context: only its last block_size tokens are used.
    #[arg(long)]
    prompt: Option<String>,
    /// Most tokens to generate (it stops earlier at the end-of-text token or a --stop string).
    #[arg(long, default_value_t = 500)]
    max_new_tokens: usize,
    #[command(flatten)]
    sampling: SamplingArgs,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Compute device.
    #[arg(long, value_enum, default_value = "cpu")]
    device: Device,
    /// Load the model even if it looks too big for the memory available.
    #[arg(long)]
    ignore_memory_check: bool,
    /// Keep the weights in this type while decoding: f32, bf16, or ggml's q8_0 / q4_0
    /// blocks (8.5 and 4.5 bits a value). Matrices are converted at load and no f32
    /// copy of them is kept; norms, biases and positions stay f32. CPU only.
    /// Default: f32 for a run directory; for a .gguf file its own type (q8_0, q4_0,
    /// bf16; f32 for F32/F16 files), and q8_0 for K-quant files (lmforge has no
    /// K-quant kernels: their tensors are re-packed to q8_0 at load).
    #[arg(long, value_enum)]
    weights: Option<WeightType>,
}

pub fn run(args: SampleArgs) -> anyhow::Result<ExitCode> {
    let opts = args.sampling.options(args.max_new_tokens)?;
    match super::backend(args.device, args.threads)? {
        super::Selected::Cpu(cpu) => sample_on(&cpu, args, opts),
        super::Selected::Cuda(gpu) => sample_on(gpu.as_ref(), args, opts),
    }
}

/// `lmforge sample` once its backend is started.
fn sample_on<B: Backend>(
    backend: &B,
    args: SampleArgs,
    opts: SampleOptions,
) -> anyhow::Result<ExitCode> {
    let loading = || format!("loading the run {}", args.run.display());
    let run = lmforge::gguf::open_run(&args.run, args.weights).with_context(loading)?;
    lmforge::sample::check_is_run(run.path())?;
    let config = lmforge::checkpoint::load_config(run.path()).with_context(loading)?;
    if !args.ignore_memory_check {
        let weights = lmforge::sample::load::resolve(run.path(), args.weights)?;
        let estimate = lmforge::memory::sampling(&config, weights)?;
        let available = lmforge::memory::available();
        lmforge::memory::check(&estimate, "sampling this model", available.as_ref())?;
    }
    let (model, loaded, tokenizer) =
        lmforge::sample::load_run_as(backend, run.path(), args.weights).with_context(loading)?;
    let default_prompt = args.prompt.is_none();
    let prompt_text = args.prompt.unwrap_or_else(|| "\n".to_string());
    let prompt = tokenizer.encode(&prompt_text).with_context(|| {
        if default_prompt {
            "encoding the default prompt, a newline (this model's text had none): \
             pass --prompt with characters it knows"
        } else {
            "encoding the prompt"
        }
    })?;
    lmforge::sample::check_prompt(&model, &prompt).context("--prompt")?;
    // Sampling continues text: a chat template that does not load only loses its stop tokens.
    let format = lmforge::chat::ChatFormat::find(run.path(), tokenizer.as_ref()).unwrap_or(None);
    let loaded = (&model, loaded.weights(), tokenizer.as_ref());
    let mut stdout = std::io::stdout().lock();
    let stdout_err = |e: std::io::Error| lmforge::Error::io("<stdout>", e);
    stdout
        .write_all(prompt_text.as_bytes())
        .map_err(stdout_err)?;
    let on_text = |piece: &str| {
        stdout
            .write_all(piece.as_bytes())
            .and_then(|_| stdout.flush())
            .map_err(stdout_err)?;
        Ok(Flow::Continue)
    };
    lmforge::chat::continue_text(backend, loaded, format.as_ref(), &prompt, &opts, on_text)?;
    stdout.write_all(b"\n").map_err(stdout_err)?;
    Ok(ExitCode::SUCCESS)
}
