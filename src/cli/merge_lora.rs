//! `lmforge merge-lora`: a LoRA run as an ordinary run, its adapters merged into the weights.

use lmforge::checkpoint::{self, TOKENIZER_FILE};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct MergeArgs {
    /// A LoRA run directory (adapter_model.safetensors, its parent recorded in train_config.json).
    run: PathBuf,
    /// Run directory to write: model.safetensors, config.json, tokenizer.json.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: MergeArgs) -> anyhow::Result<ExitCode> {
    if !args
        .run
        .join(lmforge::finetune::adapters::ADAPTER_FILE)
        .exists()
    {
        anyhow::bail!(
            "{}: not a LoRA run (no adapter_model.safetensors)",
            args.run.display()
        );
    }
    let (model, params) = lmforge::finetune::load_run(&args.run)?;
    let tokenizer = lmforge::tokenizer::load(&args.run.join(TOKENIZER_FILE))?;
    std::fs::create_dir_all(&args.out)?;
    checkpoint::save_model(&args.out, &model, &params, tokenizer.eot_token())?;
    tokenizer.save(&args.out.join(TOKENIZER_FILE))?;
    lmforge::chat::jinja::sync_chat_files(Some(&args.run), &args.out)?;
    eprintln!("merged {} into {}", args.run.display(), args.out.display());
    Ok(ExitCode::SUCCESS)
}
