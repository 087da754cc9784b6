//! Reading a run's `metrics.jsonl` back: the step lines and the evaluation
//! lines, tolerant of fields it does not know (newer versions may add some).
//!
//! ```text
//! {"step": 10, "train_loss": 3.1, "lr": 0.001, "tokens_per_sec": 9000, "elapsed_s": 1.2}
//! {"step": 10, "eval": true, "train_loss": 3.0, "val_loss": 3.2, "elapsed_s": 1.5, "peak_rss_mb": 210.0}
//! ```

use crate::error::{Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};

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
}

/// Everything a run's metrics log holds, in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunMetrics {
    pub steps: Vec<StepPoint>,
    pub evals: Vec<EvalPoint>,
}

impl RunMetrics {
    /// Read `metrics.jsonl` of the run directory `run`. A missing file, a line
    /// that is not a JSON object with a `step`, and a log with no line at all
    /// are errors naming the file (and the line number).
    pub fn load(run: &Path) -> Result<Self> {
        let path = run.join(METRICS_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let metrics = Self::parse(&text, &path)?;
        if metrics.steps.is_empty() && metrics.evals.is_empty() {
            return Err(Error::format(
                &path,
                "no metrics yet (the run has not logged a step)",
            ));
        }
        Ok(metrics)
    }

    /// Parse the text of a metrics log; `path` is for error messages.
    /// Blank lines are skipped. A last line without its newline that is not
    /// JSON is one still being written (training runs while you plot) and is
    /// left out; any other bad line is an error naming its line.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut metrics = RunMetrics::default();
        let lines = text.lines().count();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = |message: String| line_error(path, i + 1, message);
            let being_written = i + 1 == lines && !text.ends_with('\n');
            let value: Value = match serde_json::from_str(line) {
                Ok(value) => value,
                Err(_) if being_written => break,
                Err(e) => return Err(bad(e.to_string())),
            };
            let step = value["step"]
                .as_u64()
                .ok_or_else(|| bad("no \"step\" number".into()))?;
            let number = |key: &str| value[key].as_f64();
            let train_loss = number("train_loss").ok_or_else(|| bad("no \"train_loss\"".into()))?;
            if value["eval"].as_bool() == Some(true) {
                metrics.evals.push(EvalPoint {
                    step,
                    train_loss,
                    val_loss: number("val_loss").ok_or_else(|| bad("no \"val_loss\"".into()))?,
                    elapsed_s: number("elapsed_s"),
                    peak_rss_mb: number("peak_rss_mb"),
                });
            } else {
                metrics.steps.push(StepPoint {
                    step,
                    train_loss,
                    lr: number("lr"),
                    tokens_per_sec: number("tokens_per_sec"),
                    elapsed_s: number("elapsed_s"),
                });
            }
        }
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

    /// The last step logged (updates done).
    pub fn last_step(&self) -> u64 {
        let steps = self.steps.iter().map(|s| s.step);
        steps
            .chain(self.evals.iter().map(|e| e.step))
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

    /// The highest peak resident memory recorded, in MiB.
    pub fn peak_rss_mb(&self) -> Option<f64> {
        self.evals
            .iter()
            .filter_map(|e| e.peak_rss_mb)
            .reduce(f64::max)
    }
}

fn line_error(path: &Path, line: usize, message: String) -> Error {
    Error::format(
        PathBuf::from(format!("{}:{line}", path.display())),
        format!("bad metrics line: {message}"),
    )
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
    }

    #[test]
    fn a_line_being_written_is_left_out_a_bad_line_is_an_error() {
        let torn = format!("{STEP}\n{{\"step\":2,\"tra");
        assert_eq!(
            RunMetrics::parse(&torn, Path::new("m"))
                .unwrap()
                .steps
                .len(),
            1
        );
        let bad = format!("{STEP}\n{{\"step\":2,\"tra\n{STEP}\n");
        let e = RunMetrics::parse(&bad, Path::new("m"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("m:2: bad metrics line"), "{e}");
        let e = RunMetrics::parse("{\"step\":1}\n", Path::new("m"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("train_loss"), "{e}");
    }
}
