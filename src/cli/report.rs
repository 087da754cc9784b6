//! `lmforge report`: one self-contained HTML page about a run.

use anyhow::Context;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct ReportArgs {
    /// The run directory.
    run: PathBuf,
    /// Where to write the page (default: RUN/report.html).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let path = lmforge::report::write_report(&args.run, args.out.as_deref())
        .with_context(|| format!("writing the report of {}", args.run.display()))?;
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}
