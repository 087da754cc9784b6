//! `lmforge sample`: generate text from a trained run, streamed to stdout.

use anyhow::Context;
use lmforge::backend::Device;
use lmforge::checkpoint;
use lmforge::sample::{SampleOptions, generate};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct SampleArgs {
    /// Run directory written by `lmforge train`.
    run: PathBuf,
    /// Text to continue (default: a newline). Longer than the context: only its last block_size tokens are used.
    #[arg(long)]
    prompt: Option<String>,
    /// Number of tokens to generate.
    #[arg(long, default_value_t = 500)]
    max_new_tokens: usize,
    /// Softmax temperature: below 1 is more conservative, above 1 more random, 0 always picks the likeliest.
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Sample only among the k likeliest tokens.
    #[arg(long)]
    top_k: Option<usize>,
    /// Random seed: the same seed gives the same text.
    #[arg(long, default_value_t = 1337)]
    seed: u64,
    /// Worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Compute device.
    #[arg(long, value_enum, default_value = "cpu")]
    device: Device,
    /// Load the model even if it looks too big for the memory available.
    #[arg(long)]
    ignore_memory_check: bool,
}

pub fn run(args: SampleArgs) -> anyhow::Result<ExitCode> {
    let opts = SampleOptions {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_k: args.top_k,
        seed: args.seed,
    };
    opts.validate()?;
    let (backend, _) = super::backend(args.device, args.threads)?;
    let loading = || format!("loading the model from {}", args.run.display());
    let config = checkpoint::load_config(&args.run).with_context(loading)?;
    let estimate = lmforge::memory::sampling(&config)?;
    if !args.ignore_memory_check {
        let available = lmforge::memory::available();
        lmforge::memory::check(&estimate, "sampling this model", available.as_ref())?;
    }
    let (model, params) = lmforge::finetune::load_run(&args.run).with_context(loading)?;
    let tokenizer = checkpoint::load_tokenizer(&args.run, &model)?;
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
    lmforge::sample::check(&model, &prompt, &opts)?;

    let mut stdout = std::io::stdout().lock();
    let mut pending: Vec<u8> = Vec::new();
    let stdout_err = |e: std::io::Error| lmforge::Error::io("<stdout>", e);
    stdout
        .write_all(prompt_text.as_bytes())
        .map_err(stdout_err)?;
    let params = lmforge::backend::Backend::upload(&backend, params)?;
    generate(&backend, &model, &params, &prompt, &opts, |token| {
        // Print whole UTF-8 characters as soon as they are complete.
        pending.extend(tokenizer.decode_bytes(&[token]));
        let valid = match std::str::from_utf8(&pending) {
            Ok(s) => s.len(),
            Err(e) => e.valid_up_to(),
        };
        stdout
            .write_all(&pending[..valid])
            .and_then(|_| stdout.flush())
            .map_err(stdout_err)?;
        pending.drain(..valid);
        Ok(())
    })?;
    stdout
        .write_all(&pending)
        .and_then(|_| stdout.write_all(b"\n"))
        .map_err(stdout_err)?;
    Ok(ExitCode::SUCCESS)
}
