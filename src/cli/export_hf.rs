//! `lmforge export-hf`: a run as a folder `transformers` loads (LoRA adapters merged).

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ExportArgs {
    /// Run directory written by `lmforge train` or `import-hf`.
    run: PathBuf,
    /// Folder to write.
    #[arg(long)]
    out: PathBuf,
}

pub fn run(args: ExportArgs) -> anyhow::Result<ExitCode> {
    lmforge::hf::export(&args.run, &args.out)?;
    eprintln!(
        "wrote {}; load it with transformers.AutoModelForCausalLM.from_pretrained({:?}) and AutoTokenizer.from_pretrained",
        args.out.display(),
        args.out.display().to_string()
    );
    Ok(ExitCode::SUCCESS)
}
