//! `lmforge runs`: a table of the run directories in a folder.

use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct RunsArgs {
    /// A folder of run directories (or one run directory).
    #[arg(default_value = "runs")]
    dir: PathBuf,
}

pub fn run(args: RunsArgs) -> anyhow::Result<ExitCode> {
    let table = lmforge::report::runs::runs_table(&args.dir)
        .with_context(|| format!("listing runs in {}", args.dir.display()))?;
    std::io::stdout().write_all(table.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
