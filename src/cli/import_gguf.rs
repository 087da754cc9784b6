//! `lmforge import-gguf`: a GGUF file (llama.cpp, Ollama) into a run directory.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ImportGgufArgs {
    /// A `.gguf` file: gpt2, llama, mistral or qwen2, in F32, F16, BF16, Q8_0,
    /// Q4_0, Q4_K or Q6_K (quantized weights are dequantized to f32).
    file: PathBuf,
    /// Run directory to write (model.safetensors, config.json, tokenizer.json).
    #[arg(long)]
    out: PathBuf,
    /// Replace the run already in --out (its files are deleted only once the
    /// new ones are complete; other files stay).
    #[arg(long)]
    overwrite: bool,
}

pub fn run(args: ImportGgufArgs) -> anyhow::Result<ExitCode> {
    let imported = lmforge::rundir::write_new_output(
        &args.out,
        "lmforge import-gguf",
        args.overwrite,
        |dir| lmforge::gguf::import(&args.file, dir),
    )?;
    let c = &imported.model.config;
    eprintln!(
        "imported {} ({}, {}; {} layers x {} dims, {} heads, context {}, vocabulary {}, {} parameters) into {}",
        args.file.display(),
        imported.arch,
        imported.types.join("/"),
        c.n_layer,
        c.n_embd,
        c.n_head,
        c.block_size,
        c.vocab_size,
        imported.model.num_params(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
