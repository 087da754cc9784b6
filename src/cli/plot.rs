//! `lmforge plot`: draw the loss curves of one or more runs into a PNG or SVG.

use anyhow::Context;
use lmforge::plot::{PlotOptions, XAxis, XScale};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct PlotArgs {
    /// Run directories (each with a metrics.jsonl); several are overlaid,
    /// named after their directories in the legend.
    #[arg(required = true, value_name = "RUN")]
    runs: Vec<PathBuf>,
    /// The picture to write: a name ending in .png or .svg.
    #[arg(long, default_value = "loss.png")]
    out: PathBuf,
    /// What the x axis counts.
    #[arg(long, value_enum, default_value = "steps")]
    x: XAxis,
    /// Linear or logarithmic x axis; auto picks log when the loss falls
    /// mostly in the first tenth of the run.
    #[arg(long, value_enum, default_value = "auto")]
    x_scale: XScale,
    /// Picture width in pixels.
    #[arg(long, default_value_t = 1200, value_parser = clap::value_parser!(u32).range(400..=8000))]
    width: u32,
    /// Picture height in pixels.
    #[arg(long, default_value_t = 800, value_parser = clap::value_parser!(u32).range(300..=8000))]
    height: u32,
}

pub fn run(args: PlotArgs) -> anyhow::Result<ExitCode> {
    let opts = PlotOptions {
        x: args.x,
        x_scale: args.x_scale,
        width: args.width,
        height: args.height,
    };
    lmforge::plot::plot_runs(&args.runs, &args.out, &opts)
        .with_context(|| format!("plotting into {}", args.out.display()))?;
    eprintln!("wrote {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}
