//! `lmforge train`: train a model, or resume a run.

use anyhow::Context;
use lmforge::backend::Device;
use lmforge::train::{Observe, Preset, Start, TrainJob, TrainOverrides, config};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Training data: a UTF-8 text file, a directory (every file under it),
    /// compressed, tar, JSON Lines or Parquet files as `prepare` reads them (a
    /// BOM is removed and CRLF becomes LF), or a directory of token shards.
    /// Default: the built-in Tiny Shakespeare.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Starting hyperparameters.
    #[arg(long, value_enum)]
    preset: Option<Preset>,
    /// TOML file of hyperparameters (flag names, `_` for `-`), applied over the preset.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run directory for checkpoints and metrics (default: runs/<preset>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint; training
    /// flags given here (e.g. --max-iters) change the saved configuration.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["preset", "out"])]
    resume: Option<PathBuf>,
    /// Worker threads (default: one per core). Same seed + same threads = same losses.
    #[arg(long)]
    threads: Option<usize>,
    /// Compute device.
    #[arg(long, value_enum, default_value = "cpu")]
    device: Device,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
    /// The loss plot redrawn in the run directory at each evaluation:
    /// loss.png, loss.svg, or none.
    #[arg(long, value_name = "png|svg|none", default_value = "png", value_parser = parse_plot)]
    plot: PlotChoice,
    /// At each evaluation, store a short sample of the model's text in the
    /// run's samples.jsonl (shown by `lmforge report`).
    #[arg(long)]
    sample_every_eval: bool,
    #[command(flatten)]
    overrides: TrainOverrides,
}

pub fn run(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let (backend, _) = super::backend(args.device, args.threads)?;
    let (out, start) = match &args.resume {
        Some(dir) => {
            let mut overrides = Vec::new();
            if let Some(path) = &args.config {
                overrides.push(TrainOverrides::from_toml_file(path)?);
            }
            overrides.push(args.overrides.clone());
            (dir.clone(), Start::Resume(overrides))
        }
        None => {
            let preset = args.preset.unwrap_or(Preset::CharCpu);
            let cfg = config::resolve(preset, args.config.as_deref(), &args.overrides)?;
            let default_out = PathBuf::from("runs").join(preset.to_string());
            (args.out.clone().unwrap_or(default_out), Start::New(cfg))
        }
    };

    let stop = Arc::new(AtomicBool::new(false));
    let handler_flag = stop.clone();
    ctrlc::set_handler(move || {
        if handler_flag.swap(true, Ordering::SeqCst) {
            // Second Ctrl-C: leave now. Checkpoint files are written atomically,
            // so the last complete checkpoint is intact.
            std::process::exit(130);
        }
        eprintln!(
            "\nstopping after this step and saving a checkpoint (Ctrl-C again to quit at once)"
        );
    })
    .context("installing the Ctrl-C handler")?;

    let summary = lmforge::train::train(
        &backend,
        TrainJob {
            data: args.data,
            out: out.clone(),
            start,
            progress: !args.quiet,
            stop: &stop,
            observe: Observe {
                plot: args.plot.0,
                sample_every_eval: args.sample_every_eval,
            },
        },
    )
    .with_context(|| format!("training into {}", out.display()))?;
    let fmt = |loss: Option<f32>| loss.map_or("-".to_string(), |l| format!("{l:.4}"));
    eprintln!(
        "step {}: train loss {}, val loss {}, {:.0} tokens/s",
        summary.step,
        fmt(summary.train_loss),
        fmt(summary.val_loss),
        summary.tokens_per_sec
    );
    if summary.interrupted {
        eprintln!("resume with: lmforge train --resume {}", out.display());
        return Ok(ExitCode::from(130));
    }
    eprintln!("sample with: lmforge sample {}", out.display());
    Ok(ExitCode::SUCCESS)
}

/// `--plot`: a picture format, or none.
#[derive(Clone, Copy)]
struct PlotChoice(Option<lmforge::plot::Format>);

fn parse_plot(text: &str) -> Result<PlotChoice, String> {
    match text {
        "png" => Ok(PlotChoice(Some(lmforge::plot::Format::Png))),
        "svg" => Ok(PlotChoice(Some(lmforge::plot::Format::Svg))),
        "none" => Ok(PlotChoice(None)),
        other => Err(format!("{other:?}: expected png, svg or none")),
    }
}
