//! Reading a run's `metrics.jsonl` back: the step lines, the evaluation
//! lines and the steps that were skipped, tolerant of fields it does not know
//! (newer versions may add some). This is the one reader of the log: `plot`,
//! `report`, `runs` and the plot drawn during training all read it here.
//!
//! ```text
//! {"step": 10, "train_loss": 3.1, "lr": 0.001, "tokens_per_sec": 9000, "elapsed_s": 1.2}
//! {"step": 10, "eval": true, "train_loss": 3.0, "val_loss": 3.2, "elapsed_s": 1.5, "peak_rss_mb": 210.0}
//! {"step": 20, "eval": true, ..., "acc_norm": 0.31}     (with train --eval-choices)
//! {"step": 11, "skipped": true, "why": "the loss is NaN", "lr": 0.001}
//! ```
//!
//! A line that cannot be read (a disk that filled up, a hand edit) is left
//! out and named in [`RunMetrics::bad_lines`], for the caller to warn of: one
//! bad line does not hide the rest of the run.

use crate::error::{Error, Result};
use serde_json::Value;
use std::path::Path;

/// The name of the metrics log in a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// One optimizer update as logged.
#[derive(Debug, Clone, PartialEq)]
pub struct StepPoint {
    /// Updates done (1 after the first).
    pub step: u64,
    pub train_loss: f64,
    pub lr: Option<f64>,
    pub tokens_per_sec: Option<f64>,
    pub elapsed_s: Option<f64>,
}

/// One evaluation as logged.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalPoint {
    pub step: u64,
    pub train_loss: f64,
    pub val_loss: f64,
    pub elapsed_s: Option<f64>,
    /// Peak resident memory of the training process so far, in MiB.
    pub peak_rss_mb: Option<f64>,
    /// Multiple-choice accuracy by mean loss (`train --eval-choices`).
    pub acc_norm: Option<f64>,
}

/// A step that made no update and has no loss: a non-finite loss or gradient
/// under `--on-nan skip`, or a fine-tuning batch whose targets were all masked.
#[derive(Debug, Clone, PartialEq)]
pub struct SkippedStep {
    pub step: u64,
    /// Why, as logged (older logs do not say).
    pub why: Option<String>,
}

/// Everything a run's metrics log holds, in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunMetrics {
    pub steps: Vec<StepPoint>,
    pub evals: Vec<EvalPoint>,
    pub skipped: Vec<SkippedStep>,
    /// The lines left out, each as `FILE:LINE: what is wrong`.
    pub bad_lines: Vec<String>,
}

/// Items with the 1-based number of the line they come from.
pub type Numbered<T> = Vec<(usize, T)>;

/// The lines of a JSON Lines log that lmforge appends to as it goes (metrics,
/// samples), parsed, with their 1-based numbers; and the lines that are not
/// JSON objects, with their numbers and `FILE:LINE: what is wrong`. Blank lines are
/// skipped, and so is a last line without its newline that is not JSON: one
/// still being written.
pub fn read_log_lines(text: &str, path: &Path) -> (Numbered<Value>, Numbered<String>) {
    let text = crate::data::documents::strip_bom(text);
    let (mut values, mut bad) = (Vec::new(), Vec::new());
    let lines = text.lines().count();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let being_written = i + 1 == lines && !text.ends_with('\n');
        match serde_json::from_str::<Value>(line) {
            Ok(value) if value.is_object() => values.push((i + 1, value)),
            Ok(_) => bad.push((i + 1, bad_line(path, i + 1, "not a JSON object"))),
            Err(_) if being_written => break,
            Err(e) => bad.push((i + 1, bad_line(path, i + 1, &format!("not JSON ({e})")))),
        }
    }
    (values, bad)
}

/// `FILE:LINE: message`, what a bad line is reported as.
pub fn bad_line(path: &Path, line: usize, message: &str) -> String {
    format!("{}:{line}: {message}; line skipped", path.display())
}

/// One metrics line as what it logs, or what is wrong with it.
enum Line {
    Step(StepPoint),
    Eval(EvalPoint),
    Skipped(SkippedStep),
}

fn read_line(value: &Value) -> std::result::Result<Line, &'static str> {
    let step = value["step"].as_u64().ok_or("no \"step\" number")?;
    if value["skipped"].as_bool() == Some(true) {
        let why = value["why"].as_str().map(str::to_string);
        return Ok(Line::Skipped(SkippedStep { step, why }));
    }
    let number = |key: &str| value[key].as_f64();
    let train_loss = number("train_loss").ok_or("no \"train_loss\" number")?;
    if value["eval"].as_bool() == Some(true) {
        return Ok(Line::Eval(EvalPoint {
            step,
            train_loss,
            val_loss: number("val_loss").ok_or("no \"val_loss\" number")?,
            elapsed_s: number("elapsed_s"),
            peak_rss_mb: number("peak_rss_mb"),
            acc_norm: number("acc_norm"),
        }));
    }
    Ok(Line::Step(StepPoint {
        step,
        train_loss,
        lr: number("lr"),
        tokens_per_sec: number("tokens_per_sec"),
        elapsed_s: number("elapsed_s"),
    }))
}

impl RunMetrics {
    /// Read `metrics.jsonl` of the run directory `run`. A missing file, and
    /// a log with no line that can be read, are errors naming the file; bad
    /// lines among good ones are left out and listed in
    /// [`RunMetrics::bad_lines`].
    pub fn load(run: &Path) -> Result<Self> {
        let path = run.join(METRICS_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let metrics = Self::parse(&text, &path)?;
        if metrics.steps.is_empty() && metrics.evals.is_empty() {
            let why = match (metrics.bad_lines.first(), metrics.skipped.len()) {
                (Some(bad), _) => format!("no line can be read (first: {bad})"),
                (None, 0) => "no metrics yet (the run has not logged a step)".into(),
                (None, n) => format!("no loss logged yet ({n} steps skipped)"),
            };
            return Err(Error::format(&path, why));
        }
        Ok(metrics)
    }

    /// Parse the text of a metrics log; `path` is for messages. Never fails:
    /// what cannot be read is in [`RunMetrics::bad_lines`] (see [`read_log_lines`]).
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let (values, mut bad) = read_log_lines(text, path);
        let mut metrics = RunMetrics::default();
        for (number, value) in values {
            match read_line(&value) {
                Ok(Line::Step(point)) => metrics.steps.push(point),
                Ok(Line::Eval(point)) => metrics.evals.push(point),
                Ok(Line::Skipped(skipped)) => metrics.skipped.push(skipped),
                Err(why) => bad.push((number, bad_line(path, number, why))),
            }
        }
        bad.sort_by_key(|&(number, _)| number);
        metrics.bad_lines = bad.into_iter().map(|(_, message)| message).collect();
        Ok(metrics)
    }

    /// The lowest validation loss and the step it was reached at.
    pub fn best_val(&self) -> Option<(u64, f64)> {
        self.evals
            .iter()
            .map(|e| (e.step, e.val_loss))
            .filter(|(_, loss)| loss.is_finite())
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// The highest multiple-choice `acc_norm` and the step it was reached at.
    pub fn best_acc_norm(&self) -> Option<(u64, f64)> {
        self.evals
            .iter()
            .filter_map(|e| Some((e.step, e.acc_norm?)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// The last step logged (updates done, skipped ones included).
    pub fn last_step(&self) -> u64 {
        let steps = self.steps.iter().map(|s| s.step);
        let skipped = self.skipped.iter().map(|s| s.step);
        steps
            .chain(self.evals.iter().map(|e| e.step))
            .chain(skipped)
            .max()
            .unwrap_or(0)
    }

    /// Training wall time: the largest `elapsed_s` logged.
    pub fn elapsed_s(&self) -> Option<f64> {
        let steps = self.steps.iter().filter_map(|s| s.elapsed_s);
        let evals = self.evals.iter().filter_map(|e| e.elapsed_s);
        steps.chain(evals).reduce(f64::max)
    }

    /// Median training throughput over the logged steps.
    pub fn median_tokens_per_sec(&self) -> Option<f64> {
        let mut speeds: Vec<f64> = self.steps.iter().filter_map(|s| s.tokens_per_sec).collect();
        speeds.sort_by(f64::total_cmp);
        speeds.get(speeds.len() / 2).copied()
    }

    /// The skipped steps counted by reason: `3 (every target masked: 2,
    /// not said: 1)`; `None` if none was skipped.
    pub fn skipped_summary(&self) -> Option<String> {
        if self.skipped.is_empty() {
            return None;
        }
        let mut by_why: Vec<(&str, usize)> = Vec::new();
        for s in &self.skipped {
            let why = s.why.as_deref().unwrap_or("not said");
            match by_why.iter_mut().find(|(w, _)| *w == why) {
                Some((_, n)) => *n += 1,
                None => by_why.push((why, 1)),
            }
        }
        let parts: Vec<String> = by_why.iter().map(|(w, n)| format!("{w}: {n}")).collect();
        Some(format!("{} ({})", self.skipped.len(), parts.join(", ")))
    }

    /// The highest peak resident memory recorded, in MiB.
    pub fn peak_rss_mb(&self) -> Option<f64> {
        self.evals
            .iter()
            .filter_map(|e| e.peak_rss_mb)
            .reduce(f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: &str = r#"{"step":1,"train_loss":3.0,"lr":0.001}"#;
    const EVAL: &str = r#"{"step":1,"eval":true,"train_loss":2.9,"val_loss":3.1,"later":{"x":1}}"#;

    #[test]
    fn reads_steps_and_evaluations_and_ignores_unknown_fields() {
        let m = RunMetrics::parse(&format!("{STEP}\n\n{EVAL}\n"), Path::new("m")).unwrap();
        assert_eq!((m.steps.len(), m.evals.len()), (1, 1));
        assert_eq!(m.steps[0].lr, Some(0.001));
        assert_eq!(m.best_val(), Some((1, 3.1)));
        assert_eq!(m.last_step(), 1);
        assert_eq!((m.evals[0].acc_norm, m.best_acc_norm()), (None, None));
        let acc = r#"{"step":2,"eval":true,"train_loss":2.8,"val_loss":3.0,"acc_norm":0.3}"#;
        let later = r#"{"step":3,"eval":true,"train_loss":2.7,"val_loss":2.9,"acc_norm":0.25}"#;
        let m = RunMetrics::parse(&format!("{EVAL}\n{acc}\n{later}\n"), Path::new("m")).unwrap();
        assert_eq!(m.evals[1].acc_norm, Some(0.3));
        assert_eq!(m.best_acc_norm(), Some((2, 0.3)));
    }

    #[test]
    fn a_line_being_written_is_left_out_a_bad_line_is_skipped_and_named() {
        let torn = format!("{STEP}\n{{\"step\":2,\"tra");
        let m = RunMetrics::parse(&torn, Path::new("m")).unwrap();
        assert_eq!((m.steps.len(), m.bad_lines.len()), (1, 0));
        let bad = format!("{STEP}\n{{\"step\":2,\"tra\n{{\"step\":3}}\n[1]\n{STEP}\n");
        let m = RunMetrics::parse(&bad, Path::new("m")).unwrap();
        assert_eq!(m.steps.len(), 2);
        assert_eq!(m.bad_lines.len(), 3, "{:?}", m.bad_lines);
        assert!(
            m.bad_lines[0].starts_with("m:2: not JSON"),
            "{:?}",
            m.bad_lines
        );
        assert!(
            m.bad_lines[1].starts_with("m:3: no \"train_loss\""),
            "{:?}",
            m.bad_lines
        );
        assert!(
            m.bad_lines[2].starts_with("m:4: not a JSON object"),
            "{:?}",
            m.bad_lines
        );
    }

    #[test]
    fn skipped_steps_are_read_with_or_without_a_reason() {
        let text = format!(
            "{STEP}\n{{\"lr\":0.001,\"skipped\":true,\"step\":2}}\n\
             {{\"step\":3,\"skipped\":true,\"why\":\"every target masked\"}}\n"
        );
        let m = RunMetrics::parse(&text, Path::new("m")).unwrap();
        assert_eq!(m.steps.len(), 1);
        assert!(m.bad_lines.is_empty(), "{:?}", m.bad_lines);
        assert_eq!(m.skipped[0], SkippedStep { step: 2, why: None });
        assert_eq!(m.skipped[1].why.as_deref(), Some("every target masked"));
        assert_eq!(m.last_step(), 3);
    }
}
