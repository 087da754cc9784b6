//! `lmforge import-hf`: a Hugging Face GPT-2 folder (or cached model name) into a run directory.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ImportArgs {
    /// A `save_pretrained` folder, or a model name in the local Hugging Face
    /// cache (`gpt2`, `openai-community/gpt2-medium`). Nothing is downloaded.
    source: String,
    /// Run directory to write (model.safetensors, config.json, tokenizer.json).
    #[arg(long)]
    out: PathBuf,
    /// Replace the run already in --out (its files are deleted only once the
    /// new ones are complete; other files stay).
    #[arg(long)]
    overwrite: bool,
    /// The tokenizer, for a folder without tokenizer files (what
    /// `model.save_pretrained` alone writes): `gpt2` or a tokenizer.json.
    /// It must not have more tokens than the config's vocab_size.
    #[arg(long)]
    tokenizer: Option<lmforge::tokenizer::TokenizerSpec>,
}

pub fn run(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let imported =
        lmforge::rundir::write_new_output(&args.out, "lmforge import-hf", args.overwrite, |dir| {
            lmforge::hf::import_with(&args.source, dir, args.tokenizer.as_ref())
        })?;
    let c = &imported.model.config;
    eprintln!(
        "imported {} ({} layers x {} dims, {} heads, context {}, vocabulary {}, {} parameters) into {}",
        imported.source.display(),
        c.n_layer,
        c.n_embd,
        c.n_head,
        c.block_size,
        c.vocab_size,
        imported.model.num_params(),
        args.out.display()
    );
    eprintln!(
        "fine-tune with: lmforge train --init-from {} --data YOUR_TEXT --out runs/mine",
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}
