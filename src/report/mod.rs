//! Run reports: the table of runs (`lmforge runs`, [`runs`]) and one
//! self-contained HTML page per run (`lmforge report`): the loss plot as
//! inline SVG, the numbers, the configuration and the samples taken at
//! evaluations. The page loads nothing: no scripts, fonts or images from
//! anywhere, so it can be mailed or opened offline.

pub mod runs;

pub use runs::{RunSummary, list_runs};

use crate::checkpoint::TRAIN_CONFIG_FILE;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic_bytes;
use crate::plot::metrics::{bad_line, read_log_lines};
use crate::plot::svg::escape;
use crate::plot::{PlotOptions, RunMetrics, axis::format_count, load_run, loss_svg, run_names};
use crate::train::observe::SAMPLES_FILE;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// The report's default name in the run directory.
pub const REPORT_FILE: &str = "report.html";

const STYLE: &str = "body{font-family:DejaVu Sans,Verdana,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse}td,th{padding:.25em .8em;border-bottom:1px solid #eee;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto;white-space:pre-wrap}
svg{max-width:100%;height:auto}";

/// One evaluation sample read back from `samples.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub step: u64,
    pub text: String,
}

/// The run's samples, in order; none if it has no `samples.jsonl`. A line
/// that cannot be read is left out with a warning naming it (as for the
/// metrics, [`crate::plot::metrics::read_log_lines`]).
pub fn read_samples(run: &Path) -> Result<Vec<Sample>> {
    let path = run.join(SAMPLES_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(Vec::new());
    };
    let (values, bad) = read_log_lines(&text, &path);
    let mut bad: Vec<String> = bad.into_iter().map(|(_, message)| message).collect();
    let mut samples = Vec::new();
    for (number, value) in values {
        match (value["step"].as_u64(), value["text"].as_str()) {
            (Some(step), Some(text)) => samples.push(Sample {
                step,
                text: text.to_string(),
            }),
            _ => bad.push(bad_line(&path, number, "needs \"step\" and \"text\"")),
        }
    }
    bad.iter().for_each(crate::diag::warn);
    Ok(samples)
}

/// Write the HTML report of the run in `run` to `out` (default
/// `run/report.html`). Returns the path written.
pub fn write_report(run: &Path, out: Option<&Path>) -> Result<PathBuf> {
    let out = out.map_or_else(|| run.join(REPORT_FILE), Path::to_path_buf);
    let html = report_html(run)?;
    write_atomic_bytes(&out, html.as_bytes())?;
    Ok(out)
}

/// The report page of the run in `run`.
pub fn report_html(run: &Path) -> Result<String> {
    let name = run_names(&[run.to_path_buf()]).remove(0);
    let series = load_run(run, name.clone())?;
    for bad in &series.metrics.bad_lines {
        crate::diag::warn(bad);
    }
    let plot = loss_svg(std::slice::from_ref(&series), &PlotOptions::default())?;
    let config_path = run.join(TRAIN_CONFIG_FILE);
    let config = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let summary = RunSummary::read(run);
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>{title} - lmforge run report</title><style>{STYLE}</style></head><body>\n\
         <h1>Run {title}</h1>\n<p>{dir}</p>\n<h2>Loss</h2>\n{plot}",
        title = escape(&name),
        dir = escape(&run.display().to_string()),
    );
    html.push_str(&numbers_section(&summary, &series.metrics));
    html.push_str(&evals_section(&series.metrics));
    html.push_str(&samples_section(&read_samples(run)?));
    let _ = write!(
        html,
        "<h2>Configuration</h2>\n<p><code>{TRAIN_CONFIG_FILE}</code></p>\n<pre>{}</pre>\n</body></html>\n",
        escape_block(&config)
    );
    Ok(html)
}

/// Like [`escape`] but keeping line breaks (for `<pre>`).
fn escape_block(text: &str) -> String {
    text.lines().map(escape).collect::<Vec<_>>().join("\n")
}

fn row(html: &mut String, label: &str, value: Option<String>) {
    let value = value.unwrap_or_else(|| "-".into());
    let _ = writeln!(
        html,
        "<tr><th>{}</th><td>{}</td></tr>",
        escape(label),
        escape(&value)
    );
}

/// Model, data, throughput and memory.
fn numbers_section(s: &RunSummary, m: &RunMetrics) -> String {
    let mut html = String::from("<h2>Numbers</h2>\n<table>\n");
    row(&mut html, "model (layers x dims)", s.model.clone());
    row(
        &mut html,
        "parameters",
        s.params
            .map(|p| format!("{p} ({})", format_count(p as f64))),
    );
    row(&mut html, "tokenizer", s.tokenizer.clone());
    row(&mut html, "steps", s.steps.map(|v| v.to_string()));
    if let Some(skipped) = m.skipped_summary() {
        row(&mut html, "steps skipped (no update)", Some(skipped));
    }
    let best = m
        .best_val()
        .map(|(step, v)| format!("{v:.4} nats per token at step {step}"));
    row(&mut html, "best validation loss", best);
    if let Some((step, acc)) = m.best_acc_norm() {
        let value = format!("{acc:.4} at step {step} (multiple choice, --eval-choices)");
        row(&mut html, "best acc_norm", Some(value));
    }
    row(&mut html, "tokens seen", s.tokens_seen.map(format_count));
    row(&mut html, "wall time", s.wall_s.map(runs::format_duration));
    let speed = m
        .median_tokens_per_sec()
        .map(|t| format!("{t:.0} tokens/s (median step)"));
    row(&mut html, "throughput", speed);
    row(
        &mut html,
        "peak memory (RSS)",
        m.peak_rss_mb().map(|mb| format!("{mb:.0} MiB")),
    );
    row(&mut html, "parent run", s.parent.clone());
    html.push_str("</table>\n");
    html
}

/// Every evaluation as a table (with `acc_norm` when the run logged it).
fn evals_section(m: &RunMetrics) -> String {
    let acc = m.evals.iter().any(|e| e.acc_norm.is_some());
    let mut html = String::from(
        "<h2>Evaluations</h2>\n<table>\n<tr><th>step</th><th>train loss</th><th>val loss</th>",
    );
    if acc {
        html.push_str("<th>acc_norm</th>");
    }
    html.push_str("<th>time</th><th>peak RSS</th></tr>\n");
    let dash = || "-".to_string();
    for e in &m.evals {
        let _ = write!(
            html,
            "<tr><td class=n>{}</td><td class=n>{:.4}</td><td class=n>{:.4}</td>",
            e.step, e.train_loss, e.val_loss,
        );
        if acc {
            let value = e.acc_norm.map_or_else(dash, |a| format!("{a:.4}"));
            let _ = write!(html, "<td class=n>{value}</td>");
        }
        let _ = writeln!(
            html,
            "<td class=n>{}</td><td class=n>{}</td></tr>",
            e.elapsed_s.map_or_else(dash, runs::format_duration),
            e.peak_rss_mb.map_or_else(dash, |mb| format!("{mb:.0} MiB")),
        );
    }
    html.push_str("</table>\n");
    html
}

fn samples_section(samples: &[Sample]) -> String {
    let mut html = String::from("<h2>Samples at evaluations</h2>\n");
    if samples.is_empty() {
        html.push_str("<p>None recorded (train with <code>--sample-every-eval</code>).</p>\n");
    }
    for s in samples {
        let _ = writeln!(
            html,
            "<h3>step {}</h3>\n<pre>{}</pre>",
            s.step,
            escape_block(&s.text)
        );
    }
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The evaluations table and the numbers gain acc_norm when it was logged.
    #[test]
    fn acc_norm_is_reported_when_the_run_logged_it() {
        let eval = |step: u32, acc: &str| {
            format!("{{\"step\":{step},\"eval\":true,\"train_loss\":2.0,\"val_loss\":2.5{acc}}}\n")
        };
        let path = Path::new("m");
        let plain = RunMetrics::parse(&eval(1, ""), path).unwrap();
        assert!(!evals_section(&plain).contains("acc_norm"));
        let text = eval(1, ",\"acc_norm\":0.25") + &eval(2, ",\"acc_norm\":0.3125");
        let with = RunMetrics::parse(&text, path).unwrap();
        let table = evals_section(&with);
        assert!(
            table.contains("<th>acc_norm</th>") && table.contains(">0.3125<"),
            "{table}"
        );
        let numbers = numbers_section(&RunSummary::read(Path::new("no-such-run")), &with);
        assert!(numbers.contains("0.3125 at step 2"), "{numbers}");
    }
}
