//! `lmforge merge-lora`: a LoRA run as an ordinary run, its adapters merged into the weights.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct MergeArgs {
    /// A LoRA run directory (adapter_model.safetensors, its parent recorded in train_config.json).
    run: PathBuf,
    /// Run directory to write: model.safetensors, config.json, tokenizer.json.
    #[arg(long)]
    out: PathBuf,
    /// Replace the run already in --out (its files are deleted only once the
    /// new ones are complete; other files stay).
    #[arg(long)]
    overwrite: bool,
}

pub fn run(args: MergeArgs) -> anyhow::Result<ExitCode> {
    lmforge::rundir::write_new_output(&args.out, "lmforge merge-lora", args.overwrite, |dir| {
        lmforge::finetune::adapters::write_merged(&args.run, dir)
    })?;
    eprintln!("merged {} into {}", args.run.display(), args.out.display());
    Ok(ExitCode::SUCCESS)
}
