//! Loss plots: training and validation loss against steps or tokens, with
//! the learning rate below, for one run or several overlaid.
//!
//! The figure is written as SVG by hand ([`chart`] over a small [`svg`]
//! writer), so every label's place is decided here and none is clipped; a
//! PNG is that SVG drawn by `resvg` with an embedded font ([`raster`]).
//! Pure Rust: no Python, no system fonts.
//!
//! ```text
//! lmforge plot runs/a runs/b --out loss.png     # overlay two runs
//! ```

pub mod axis;
pub mod chart;
pub mod metrics;
pub mod raster;
pub mod svg;

pub use chart::{PlotOptions, RunSeries, XAxis, XScale, loss_svg};
pub use metrics::{EvalPoint, RunMetrics, SkippedStep, StepPoint};

use crate::checkpoint::TRAIN_CONFIG_FILE;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic_bytes;
use std::path::{Path, PathBuf};

/// A picture file format, known from the file name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Png,
    Svg,
}

impl Format {
    /// The picture training leaves in its run directory: `loss.png` or `loss.svg`.
    pub fn run_plot_file(self) -> &'static str {
        match self {
            Format::Png => "loss.png",
            Format::Svg => "loss.svg",
        }
    }

    /// `.png` or `.svg` (any case); anything else is an error.
    pub fn from_path(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("png") => Ok(Format::Png),
            Some("svg") => Ok(Format::Svg),
            _ => Err(Error::Config(format!(
                "{}: the picture's name must end in .png or .svg",
                path.display()
            ))),
        }
    }
}

/// The tokens one optimizer step trains on (batch x block x accumulation),
/// read from the run's `train_config.json`; `None` if it is missing or lacks them.
pub fn tokens_per_step(run: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(run.join(TRAIN_CONFIG_FILE)).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    let config = &value["config"];
    let field = |key: &str| config[key].as_u64();
    let accum = field("grad_accum").unwrap_or(1);
    Some((field("batch_size")? * field("block_size")? * accum) as f64)
}

/// Read the run directory `run` for plotting, named `name` in the legend.
pub fn load_run(run: &Path, name: String) -> Result<RunSeries> {
    Ok(RunSeries {
        name,
        metrics: RunMetrics::load(run)?,
        tokens_per_step: tokens_per_step(run),
    })
}

/// Legend names for run directories: their last component, or the whole
/// path where two runs share one.
pub fn run_names(runs: &[PathBuf]) -> Vec<String> {
    let base = |p: &PathBuf| {
        p.file_name().map_or_else(
            || p.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    };
    let bases: Vec<String> = runs.iter().map(base).collect();
    let unique = |b: &String| bases.iter().filter(|o| *o == b).count() == 1;
    runs.iter()
        .zip(&bases)
        .map(|(p, b)| {
            if unique(b) {
                b.clone()
            } else {
                p.display().to_string()
            }
        })
        .collect()
}

/// Write the figure of `runs` to `out`, as PNG or SVG after its extension;
/// the metrics lines left out are printed as warnings.
pub fn plot_runs(runs: &[PathBuf], out: &Path, opts: &PlotOptions) -> Result<()> {
    for warning in draw_runs(runs, out, opts)? {
        crate::diag::warn(warning);
    }
    Ok(())
}

/// [`plot_runs`], returning the metrics lines left out instead of printing them.
pub fn draw_runs(runs: &[PathBuf], out: &Path, opts: &PlotOptions) -> Result<Vec<String>> {
    let format = Format::from_path(out)?;
    let series = runs
        .iter()
        .zip(run_names(runs))
        .map(|(run, name)| load_run(run, name))
        .collect::<Result<Vec<_>>>()?;
    let svg = loss_svg(&series, opts)?;
    let bytes = match format {
        Format::Svg => svg.into_bytes(),
        Format::Png => raster::svg_to_png(&svg, out)?,
    };
    write_atomic_bytes(out, &bytes)?;
    let bad_lines = series.into_iter().flat_map(|s| s.metrics.bad_lines);
    Ok(bad_lines.collect())
}

/// Draw the run directory's own `loss.png` (or `loss.svg`), what training
/// does at each evaluation. Returns the picture's path.
pub fn write_run_plot(run: &Path, format: Format) -> Result<PathBuf> {
    let out = run.join(format.run_plot_file());
    plot_runs(&[run.to_path_buf()], &out, &PlotOptions::default())?;
    Ok(out)
}

/// [`write_run_plot`], returning the metrics lines left out instead of printing them.
pub fn draw_run_plot(run: &Path, format: Format) -> Result<(PathBuf, Vec<String>)> {
    let out = run.join(format.run_plot_file());
    let bad_lines = draw_runs(&[run.to_path_buf()], &out, &PlotOptions::default())?;
    Ok((out, bad_lines))
}
