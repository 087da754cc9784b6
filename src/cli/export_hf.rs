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
    /// Replace the model files already in --out (deleted only once the new
    /// ones are complete; other files stay).
    #[arg(long)]
    overwrite: bool,
}

pub fn run(args: ExportArgs) -> anyhow::Result<ExitCode> {
    lmforge::rundir::write_new_output(&args.out, "lmforge export-hf", args.overwrite, |dir| {
        lmforge::hf::export(&args.run, dir)
    })?;
    eprintln!(
        "wrote {}; load it with transformers.AutoModelForCausalLM.from_pretrained({:?}) and AutoTokenizer.from_pretrained",
        args.out.display(),
        args.out.display().to_string()
    );
    Ok(ExitCode::SUCCESS)
}
