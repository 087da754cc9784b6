//! `lmforge export-gguf`: a run as one GGUF file for llama.cpp, Ollama and LM Studio.

use lmforge::gguf::ExportType;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ExportGgufArgs {
    /// Run directory written by `lmforge train` or `import-hf` (LoRA adapters are merged).
    run: PathBuf,
    /// The file to write (`model.gguf`).
    #[arg(long)]
    out: PathBuf,
    /// Element type of the weight matrices; norms and biases stay f32.
    #[arg(long = "type", value_enum, default_value = "f16")]
    ty: ExportType,
    /// Replace an existing --out file (only once the new one is complete).
    #[arg(long)]
    overwrite: bool,
}

pub fn run(args: ExportGgufArgs) -> anyhow::Result<ExitCode> {
    lmforge::rundir::claim_output_file(&args.out, args.overwrite)?;
    let written = lmforge::gguf::export(&args.run, &args.out, args.ty)?;
    eprintln!(
        "wrote {} ({} architecture, {} tensors, {:.1} MB); run it with llama.cpp \
         (llama-cli -m {}) or Ollama (a Modelfile with `FROM ./{}`)",
        args.out.display(),
        written.arch,
        written.tensors,
        written.bytes as f64 / 1e6,
        args.out.display(),
        args.out
            .file_name()
            .map_or("model.gguf".into(), |n| n.to_string_lossy()),
    );
    Ok(ExitCode::SUCCESS)
}
