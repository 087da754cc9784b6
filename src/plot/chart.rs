//! The loss figure: training and validation loss against steps (or tokens)
//! in the top panel, the learning rate below on the same x axis; or below,
//! when the runs logged it (`train --eval-choices`), the multiple-choice
//! accuracy `acc_norm` at each evaluation instead.
//!
//! One run: training loss of each step (faint), training and validation
//! loss at evaluations (lines with dots), in two colours. Several runs: one
//! colour per run, validation solid, training dashed, each step faint.

use super::axis::{self, Axis, Scale};
use super::metrics::RunMetrics;
use super::svg::{Anchor, Stroke, Svg, text_width};
use crate::error::{Error, Result};

/// matplotlib's "tab10" colours, which learners know from the notebooks.
const PALETTE: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
];
const TITLE: f64 = 26.0;
const LABEL: f64 = 20.0;
const TICK: f64 = 17.0;
const GRID: &str = "#e3e3e3";

/// What the x axis counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum XAxis {
    /// Optimizer updates.
    Steps,
    /// Training tokens seen (steps x batch x block x accumulation).
    Tokens,
}

/// How the x axis is scaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum XScale {
    /// Logarithmic when the loss makes half its fall in the first tenth of
    /// the run (the interesting part would be squeezed at the left).
    Auto,
    Linear,
    Log,
}

/// How to draw the figure.
#[derive(Debug, Clone, Copy)]
pub struct PlotOptions {
    pub x: XAxis,
    pub x_scale: XScale,
    pub width: u32,
    pub height: u32,
}

impl Default for PlotOptions {
    fn default() -> Self {
        PlotOptions {
            x: XAxis::Steps,
            x_scale: XScale::Auto,
            width: 1200,
            height: 800,
        }
    }
}

/// One run to draw: its name in the legend, its metrics, and the tokens
/// one step trains on (needed for `--x tokens`).
#[derive(Debug, Clone)]
pub struct RunSeries {
    pub name: String,
    pub metrics: RunMetrics,
    pub tokens_per_step: Option<f64>,
}

/// A run's points in data coordinates.
struct Curves {
    steps: Vec<(f64, f64)>,
    eval_train: Vec<(f64, f64)>,
    val: Vec<(f64, f64)>,
    lr: Vec<(f64, f64)>,
    acc_norm: Vec<(f64, f64)>,
}

impl Curves {
    fn new(run: &RunSeries, x: XAxis) -> Result<Self> {
        let per_step = match x {
            XAxis::Steps => 1.0,
            XAxis::Tokens => run.tokens_per_step.ok_or_else(|| {
                Error::Config(format!(
                    "{}: plotting against tokens needs the run's train_config.json (batch and block size)",
                    run.name
                ))
            })?,
        };
        let at = |step: u64| step as f64 * per_step;
        let m = &run.metrics;
        Ok(Curves {
            steps: m.steps.iter().map(|s| (at(s.step), s.train_loss)).collect(),
            eval_train: m.evals.iter().map(|e| (at(e.step), e.train_loss)).collect(),
            val: m.evals.iter().map(|e| (at(e.step), e.val_loss)).collect(),
            lr: m
                .steps
                .iter()
                .filter_map(|s| Some((at(s.step), s.lr?)))
                .collect(),
            acc_norm: (m.evals.iter())
                .filter_map(|e| Some((at(e.step), e.acc_norm?)))
                .collect(),
        })
    }

    fn losses(&self) -> impl Iterator<Item = &(f64, f64)> {
        self.steps.iter().chain(&self.eval_train).chain(&self.val)
    }
}

/// Whether a log x axis reads better: the steps span two decades and the
/// loss makes half its fall within the first tenth of them (on a linear
/// axis that fall would be squeezed against the left edge).
fn log_reads_better(c: &Curves, x_max: f64) -> bool {
    // The densest curve finds the crossing; the earliest point (often the
    // evaluation before any update) gives the starting loss.
    let dense = if c.steps.len() > c.val.len() {
        &c.steps
    } else {
        &c.val
    };
    let finite = || dense.iter().filter(|p| p.1.is_finite());
    let start = c.val.iter().chain(dense).filter(|p| p.1.is_finite());
    let Some(start) = start.min_by(|a, b| a.0.total_cmp(&b.0)) else {
        return false;
    };
    let low = finite().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let half = start.1 - 0.5 * (start.1 - low);
    let x_half = finite().find(|p| p.1 <= half).map_or(x_max, |p| p.0);
    let x_min = c
        .losses()
        .map(|p| p.0)
        .filter(|&x| x > 0.0)
        .fold(x_max, f64::min);
    start.1 > low && x_max / x_min >= 100.0 && x_half < 0.1 * x_max
}

/// The x range and scale every panel shares.
fn x_axis(curves: &[Curves], opts: &PlotOptions, from: f64, to: f64) -> Axis {
    let xs = || {
        curves
            .iter()
            .flat_map(|c| c.losses().chain(&c.lr).chain(&c.acc_norm).map(|p| p.0))
    };
    let hi = xs().fold(0.0, f64::max).max(1.0);
    let scale = match opts.x_scale {
        XScale::Linear => Scale::Linear,
        XScale::Log => Scale::Log,
        XScale::Auto if curves.first().is_some_and(|c| log_reads_better(c, hi)) => Scale::Log,
        XScale::Auto => Scale::Linear,
    };
    let lo = match scale {
        Scale::Linear => 0.0,
        Scale::Log => xs().filter(|&x| x > 0.0).fold(hi, f64::min).min(hi / 10.0),
    };
    Axis {
        lo,
        hi,
        scale,
        from,
        to,
    }
}

/// A value range padded by 5% on both sides.
fn padded(values: impl Iterator<Item = f64>, floor_zero: bool) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo {
        0.05 * (hi - lo)
    } else {
        0.5 * hi.abs().max(1e-3)
    };
    let lo = if floor_zero { 0.0 } else { lo - pad };
    (lo, hi + pad)
}

/// Pixel boxes of the two panels.
struct Layout {
    left: f64,
    right: f64,
    loss: (f64, f64),
    lr: (f64, f64),
    height: f64,
}

impl Layout {
    /// Room on the left for the widest tick label and the rotated axis title.
    fn new(opts: &PlotOptions, widest_tick: f64) -> Self {
        let (w, h) = (opts.width as f64, opts.height as f64);
        let left = 16.0 + LABEL + 14.0 + widest_tick + 10.0;
        Layout {
            left,
            right: w - 36.0,
            loss: (64.0, h * 0.62),
            lr: (h * 0.62 + 34.0, h - 86.0),
            height: h,
        }
    }
}

/// Draw `runs` into an SVG document.
pub fn loss_svg(runs: &[RunSeries], opts: &PlotOptions) -> Result<String> {
    if runs.is_empty() {
        return Err(Error::Config("nothing to plot: no runs given".into()));
    }
    let curves: Vec<Curves> = runs
        .iter()
        .map(|r| Curves::new(r, opts.x))
        .collect::<Result<_>>()?;
    let (loss_lo, loss_hi) = padded(curves.iter().flat_map(|c| c.losses().map(|p| p.1)), false);
    let lower = Lower::of(&curves);
    let (_, lr_hi) = padded(
        curves
            .iter()
            .flat_map(|c| lower.series(c).iter().map(|p| p.1)),
        true,
    );
    let mut y_loss = Axis {
        lo: loss_lo,
        hi: loss_hi,
        scale: Scale::Linear,
        from: 0.0,
        to: 0.0,
    };
    let mut y_lr = Axis {
        lo: 0.0,
        hi: lr_hi,
        scale: Scale::Linear,
        from: 0.0,
        to: 0.0,
    };
    let loss_ticks = y_loss.ticks(axis::format_plain);
    let lr_ticks = lower.ticks(&y_lr);
    let widest = loss_ticks
        .iter()
        .chain(&lr_ticks)
        .map(|t| text_width(&t.1, TICK));
    let layout = Layout::new(opts, widest.fold(0.0, f64::max));
    (y_loss.from, y_loss.to) = (layout.loss.1, layout.loss.0);
    (y_lr.from, y_lr.to) = (layout.lr.1, layout.lr.0);
    let x = x_axis(&curves, opts, layout.left, layout.right);

    let mut svg = Svg::new(opts.width, opts.height);
    draw_panel(
        &mut svg,
        &x,
        &y_loss,
        &loss_ticks,
        "loss (nats per token)",
        false,
    );
    draw_panel(&mut svg, &x, &y_lr, &lr_ticks, lower.title(), true);
    draw_x_title(&mut svg, &x, &layout, opts.x);
    let single = runs.len() == 1;
    for (i, c) in curves.iter().enumerate() {
        draw_run(&mut svg, c, (&x, &y_loss, &y_lr), i, single, lower);
    }
    draw_legend(&mut svg, runs, &layout, single);
    svg.text(
        (layout.left, 38.0),
        TITLE,
        Anchor::Start,
        &title(runs),
        false,
    );
    Ok(svg.finish())
}

/// What the lower panel shows: `acc_norm` when any run logged it, else
/// the learning rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lower {
    LearningRate,
    AccNorm,
}

impl Lower {
    fn of(curves: &[Curves]) -> Self {
        match curves.iter().any(|c| !c.acc_norm.is_empty()) {
            true => Lower::AccNorm,
            false => Lower::LearningRate,
        }
    }

    fn series(self, c: &Curves) -> &[(f64, f64)] {
        match self {
            Lower::LearningRate => &c.lr,
            Lower::AccNorm => &c.acc_norm,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Lower::LearningRate => "learning rate",
            Lower::AccNorm => "acc_norm",
        }
    }

    /// Three or so ticks (the panel is short).
    fn ticks(self, y: &Axis) -> Vec<(f64, String)> {
        let format = match self {
            Lower::LearningRate => axis::format_sci,
            Lower::AccNorm => axis::format_plain,
        };
        let ticks = axis::linear_ticks(y.lo, y.hi, 3);
        ticks.into_iter().map(|v| (v, format(v))).collect()
    }
}

fn title(runs: &[RunSeries]) -> String {
    match runs {
        [run] => match run.metrics.best_val() {
            Some((step, loss)) => format!(
                "{}: best validation loss {loss:.3} at step {step}",
                short(&run.name)
            ),
            None => short(&run.name),
        },
        [a, b] => format!("{} vs {}", short(&a.name), short(&b.name)),
        _ => format!("{} runs", runs.len()),
    }
}

/// A run name cut to 40 characters, so the title and legend fit.
fn short(name: &str) -> String {
    if name.chars().count() <= 40 {
        return name.to_string();
    }
    let tail: String = name
        .chars()
        .rev()
        .take(39)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}

/// Grid, frame, y ticks and y title of one panel; x tick labels only
/// under the bottom one.
fn draw_panel(
    svg: &mut Svg,
    x: &Axis,
    y: &Axis,
    ticks: &[(f64, String)],
    title: &str,
    bottom: bool,
) {
    let (top, base) = (y.to, y.from);
    for (v, label) in ticks {
        let py = y.pos(*v);
        svg.line((x.from, py), (x.to, py), Stroke::solid(GRID, 1.0));
        svg.text(
            (x.from - 8.0, py + TICK * 0.35),
            TICK,
            Anchor::End,
            label,
            false,
        );
    }
    for (v, label) in x.ticks(x_label) {
        let px = x.pos(v);
        svg.line((px, top), (px, base), Stroke::solid(GRID, 1.0));
        if bottom {
            svg.line((px, base), (px, base + 6.0), Stroke::solid("#444", 1.0));
            svg.text((px, base + 8.0 + TICK), TICK, Anchor::Middle, &label, false);
        }
    }
    svg.rect(
        (x.from, top),
        (x.to - x.from, base - top),
        "none",
        Some("#444"),
    );
    let ty = (top + base) / 2.0;
    svg.text((16.0 + LABEL, ty), LABEL, Anchor::Middle, title, true);
}

fn x_label(v: f64) -> String {
    axis::format_count(v)
}

fn draw_x_title(svg: &mut Svg, x: &Axis, layout: &Layout, what: XAxis) {
    let mut title = match what {
        XAxis::Steps => "step (optimizer updates)".to_string(),
        XAxis::Tokens => "training tokens seen".to_string(),
    };
    if x.scale == Scale::Log {
        title.push_str(", log scale");
    }
    let at = ((x.from + x.to) / 2.0, layout.height - 20.0);
    svg.text(at, LABEL, Anchor::Middle, &title, false);
}

/// Map points into pixels, keeping those the axes can show; a long series
/// keeps only the lowest and highest point of each pixel column, which
/// draws the same picture from a few thousand points.
fn to_pixels(points: &[(f64, f64)], x: &Axis, y: &Axis) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::new();
    let shown = points.iter().filter(|p| x.shows(p.0) && y.shows(p.1));
    for (px, py) in shown.map(|p| (x.pos(p.0), y.pos(p.1))) {
        let n = out.len();
        if n >= 2 && out[n - 2].0.floor() == px.floor() && out[n - 1].0.floor() == px.floor() {
            // Third point in this column: keep the extremes.
            let (lo, hi) = (
                out[n - 2].1.min(out[n - 1].1),
                out[n - 2].1.max(out[n - 1].1),
            );
            out[n - 2].1 = lo.min(py);
            out[n - 1].1 = hi.max(py);
        } else {
            out.push((px, py));
        }
    }
    out
}

fn draw_run(
    svg: &mut Svg,
    c: &Curves,
    axes: (&Axis, &Axis, &Axis),
    i: usize,
    single: bool,
    lower: Lower,
) {
    let (x, y_loss, y_lower) = axes;
    let color = PALETTE[i % PALETTE.len()];
    let (train_color, val_color) = if single {
        (PALETTE[0], PALETTE[1])
    } else {
        (color, color)
    };
    let faint = Stroke {
        opacity: if single { 0.35 } else { 0.25 },
        ..Stroke::solid(train_color, 1.2)
    };
    svg.polyline(&to_pixels(&c.steps, x, y_loss), faint);
    let dash = if single { None } else { Some("9 6") };
    let eval_train = to_pixels(&c.eval_train, x, y_loss);
    svg.polyline(
        &eval_train,
        Stroke {
            dash,
            ..Stroke::solid(train_color, 2.5)
        },
    );
    let val = to_pixels(&c.val, x, y_loss);
    svg.polyline(&val, Stroke::solid(val_color, 2.8));
    if val.len() <= 60 {
        eval_train
            .iter()
            .for_each(|p| svg.circle(*p, 4.0, train_color));
        val.iter().for_each(|p| svg.circle(*p, 4.5, val_color));
    }
    let below = to_pixels(lower.series(c), x, y_lower);
    svg.polyline(&below, Stroke::solid(color, 2.2));
    if lower == Lower::AccNorm && below.len() <= 60 {
        below.iter().for_each(|p| svg.circle(*p, 4.0, color));
    }
}

/// The legend, in the top right corner of the loss panel.
fn draw_legend(svg: &mut Svg, runs: &[RunSeries], layout: &Layout, single: bool) {
    let entries: Vec<(String, Stroke)> = if single {
        vec![
            (
                "training, each step".into(),
                Stroke {
                    opacity: 0.35,
                    ..Stroke::solid(PALETTE[0], 2.0)
                },
            ),
            (
                "training, at evaluations".into(),
                Stroke::solid(PALETTE[0], 2.5),
            ),
            ("validation".into(), Stroke::solid(PALETTE[1], 2.8)),
        ]
    } else {
        let mut entries: Vec<(String, Stroke)> = runs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                (
                    short(&r.name),
                    Stroke::solid(PALETTE[i % PALETTE.len()], 4.0),
                )
            })
            .collect();
        entries.push(("validation".into(), Stroke::solid("#333", 2.8)));
        entries.push((
            "training, at evaluations".into(),
            Stroke {
                dash: Some("9 6"),
                ..Stroke::solid("#333", 2.5)
            },
        ));
        entries.push((
            "training, each step".into(),
            Stroke {
                opacity: 0.3,
                ..Stroke::solid("#333", 2.0)
            },
        ));
        entries
    };
    let row = TICK * 1.55;
    let widest = entries
        .iter()
        .map(|e| text_width(&e.0, TICK))
        .fold(0.0, f64::max);
    let (w, h) = (widest + 70.0, row * entries.len() as f64 + 14.0);
    let (x0, y0) = (layout.right - w - 12.0, layout.loss.0 + 12.0);
    svg.rect((x0, y0), (w, h), "white", Some("#bbb"));
    for (k, (label, stroke)) in entries.iter().enumerate() {
        let y = y0 + 7.0 + row * (k as f64 + 0.5);
        svg.line((x0 + 12.0, y), (x0 + 48.0, y), *stroke);
        svg.text(
            (x0 + 58.0, y + TICK * 0.35),
            TICK,
            Anchor::Start,
            label,
            false,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_series_keep_each_pixel_columns_extremes() {
        let x = Axis {
            lo: 0.0,
            hi: 10_000.0,
            scale: Scale::Linear,
            from: 0.0,
            to: 100.0,
        };
        let y = Axis {
            lo: 0.0,
            hi: 1.0,
            scale: Scale::Linear,
            from: 100.0,
            to: 0.0,
        };
        // A sawtooth: every column holds values from 0 to 0.99.
        let points: Vec<(f64, f64)> = (0..10_000)
            .map(|i| (i as f64, (i % 100) as f64 / 100.0))
            .collect();
        let pixels = to_pixels(&points, &x, &y);
        assert!(pixels.len() <= 2 * 101, "{} points kept", pixels.len());
        let top = pixels.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
        let bottom = pixels.iter().map(|p| p.1).fold(0.0, f64::max);
        assert!(
            (top - 1.0).abs() < 1e-9 && (bottom - 100.0).abs() < 1e-9,
            "{top} {bottom}"
        );
    }

    /// The lower panel shows acc_norm when a run logged it, else the learning rate.
    #[test]
    fn the_lower_panel_shows_acc_norm_when_the_metrics_have_it() {
        let log = |acc: &str| {
            format!(
                "{{\"step\":1,\"train_loss\":3.0,\"lr\":0.001}}\n\
                 {{\"step\":1,\"eval\":true,\"train_loss\":3.0,\"val_loss\":3.1{acc}}}\n\
                 {{\"step\":2,\"train_loss\":2.0,\"lr\":0.001}}\n\
                 {{\"step\":2,\"eval\":true,\"train_loss\":2.0,\"val_loss\":2.1{acc}}}\n"
            )
        };
        let svg = |text: &str| {
            let metrics = RunMetrics::parse(text, std::path::Path::new("m")).unwrap();
            let run = RunSeries {
                name: "r".into(),
                metrics,
                tokens_per_step: None,
            };
            loss_svg(&[run], &PlotOptions::default()).unwrap()
        };
        let with = svg(&log(",\"acc_norm\":0.375"));
        assert!(with.contains(">acc_norm<") && !with.contains(">learning rate<"));
        assert!(
            with.contains(">0.4<") || with.contains(">0.40<"),
            "acc ticks"
        );
        let without = svg(&log(""));
        assert!(without.contains(">learning rate<") && !without.contains("acc_norm"));
    }

    #[test]
    fn log_axis_only_when_the_fall_is_early() {
        let curves = |tau: f64| Curves {
            steps: (1..=2000)
                .map(|s| (s as f64, 1.5 + 2.7 * (-(s as f64) / tau).exp()))
                .collect(),
            eval_train: vec![],
            val: vec![],
            lr: vec![],
            acc_norm: vec![],
        };
        assert!(log_reads_better(&curves(30.0), 2000.0));
        assert!(!log_reads_better(&curves(600.0), 2000.0));
    }
}
