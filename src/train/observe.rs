//! What training does at each evaluation besides logging the losses: the
//! line that reports them with the best so far, the peak memory, the
//! run's `loss.png`, and (if asked) a short sample in `samples.jsonl`.
//!
//! None of it runs inside the training step. Drawing the plot or sampling
//! may fail (a full disk, say); that is reported as a warning and training
//! goes on.

use super::Trainer;
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::eval::Example;
use crate::fsutil::write_atomic_bytes;
use crate::plot::{Format, RunMetrics};
use crate::sample::{SampleOptions, generate};
use crate::tokenizer::Tokenizer;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The file `--sample-every-eval` appends to, one JSON line per evaluation.
pub const SAMPLES_FILE: &str = "samples.jsonl";
/// Tokens in each evaluation sample, and how they are drawn.
const SAMPLE_TOKENS: usize = 200;
const SAMPLE_TEMPERATURE: f64 = 0.8;
const SAMPLE_TOP_K: usize = 40;

/// What to produce at each evaluation.
#[derive(Debug, Clone)]
pub struct Observe {
    /// Redraw the run directory's `loss.png` (or `loss.svg`); `None`: no plot.
    pub plot: Option<Format>,
    /// Append a short sample of the model's text to `samples.jsonl`.
    pub sample_every_eval: bool,
    /// Score these multiple-choice questions (`lmforge eval --choices`'
    /// JSON Lines) and log their `acc_norm`.
    pub eval_choices: Option<PathBuf>,
}

impl Default for Observe {
    fn default() -> Self {
        Observe {
            plot: Some(Format::Png),
            sample_every_eval: false,
            eval_choices: None,
        }
    }
}

/// Peak resident memory of this process so far, in MiB (Linux's `VmHWM`
/// in `/proc/self/status`); `None` elsewhere.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The evaluation-time reports of one training session.
pub(super) struct Observer<'t> {
    out: PathBuf,
    options: Observe,
    tokenizer: &'t dyn Tokenizer,
    best_val: Option<(u64, f32)>,
    /// The questions of [`Observe::eval_choices`], read once.
    choices: Vec<Example>,
    /// The last warning printed, so a failure repeating at every evaluation warns once.
    last_warning: Option<String>,
}

impl<'t> Observer<'t> {
    /// Reports for the run in `out`; a run resumed after `resumed_at` steps
    /// keeps its best validation loss so far and its samples up to there.
    pub fn new(
        out: &Path,
        options: Observe,
        tokenizer: &'t dyn Tokenizer,
        resumed_at: Option<u64>,
    ) -> Result<Self> {
        let best_val = match resumed_at {
            Some(_) => RunMetrics::load(out).ok().and_then(|m| m.best_val()),
            None => None,
        };
        keep_samples_until(&out.join(SAMPLES_FILE), resumed_at)?;
        let choices = match &options.eval_choices {
            Some(path) => crate::eval::read_examples(path)?,
            None => Vec::new(),
        };
        Ok(Observer {
            out: out.to_path_buf(),
            options,
            tokenizer,
            best_val: best_val.map(|(step, loss)| (step, loss as f32)),
            choices,
            last_warning: None,
        })
    }

    /// The line reporting an evaluation, with the best validation loss so far.
    pub fn eval_line(&mut self, step: u64, train: f32, val: f32, rss_mb: Option<f64>) -> String {
        let improved = self.best_val.is_none_or(|(_, best)| val < best);
        if improved && val.is_finite() {
            self.best_val = Some((step, val));
        }
        let best = match self.best_val {
            Some((s, _)) if improved && s == step => "new best".to_string(),
            Some((s, loss)) => format!("best {loss:.4} at step {s}"),
            None => "no finite loss yet".to_string(),
        };
        let memory = rss_mb.map_or(String::new(), |mb| format!(", peak memory {mb:.0} MiB"));
        format!("step {step}: train loss {train:.4}, val loss {val:.4} ({best}){memory}")
    }

    /// The model's `acc_norm` on [`Observe::eval_choices`] (`None` without
    /// questions): llm.c's HellaSwag scoring, see [`crate::eval::choices`].
    pub fn acc_norm<B: Backend>(&self, trainer: &Trainer<B>) -> Result<Option<f64>> {
        let Some(path) = &self.options.eval_choices else {
            return Ok(None);
        };
        let (be, model) = (trainer.backend(), &trainer.model);
        let rows = crate::eval::default_rows(model);
        let mut scorer = crate::eval::Scorer::new(be, model, trainer.params(), rows)?;
        let score = crate::eval::score_choices(
            &mut scorer,
            self.tokenizer,
            &self.choices,
            path,
            |_, _| {},
        )?;
        Ok(Some(score.acc_norm))
    }

    /// Draw the plot and take the sample; returns the warnings to print.
    pub fn after_eval<B: Backend>(&mut self, trainer: &Trainer<B>, step: u64) -> Vec<String> {
        let mut warnings: Vec<String> = self.redraw().into_iter().collect();
        if self.options.sample_every_eval
            && let Err(e) = self.sample(trainer, step)
        {
            warnings.extend(self.warn(format!("could not sample at step {step}: {e}")));
        }
        warnings
    }

    /// Redraw `loss.png` (if plotting is on); returns a warning if that failed.
    /// Also called when a run stops between evaluations, so the picture
    /// shows its last steps.
    pub fn redraw(&mut self) -> Option<String> {
        let format = self.options.plot?;
        match crate::plot::draw_run_plot(&self.out, format) {
            Ok((_, bad_lines)) if bad_lines.is_empty() => None,
            Ok((_, bad_lines)) => self.warn(bad_lines.join("; ")),
            Err(error) => self.warn(format!("could not draw the loss plot: {error}")),
        }
    }

    fn warn(&mut self, message: String) -> Option<String> {
        let repeated = self.last_warning.as_ref() == Some(&message);
        self.last_warning = Some(message.clone());
        (!repeated).then(|| format!("warning: {message} (training goes on)"))
    }

    /// Generate a short text from the model as it is now and append it.
    fn sample<B: Backend>(&self, trainer: &Trainer<B>, step: u64) -> Result<()> {
        let prompt = match self.tokenizer.encode("\n") {
            Ok(ids) if !ids.is_empty() => ids,
            _ => vec![self.tokenizer.eot_token().unwrap_or(0)],
        };
        let opts = SampleOptions {
            max_new_tokens: SAMPLE_TOKENS,
            temperature: SAMPLE_TEMPERATURE as f32,
            top_k: Some(SAMPLE_TOP_K),
            seed: step,
            ..SampleOptions::default()
        };
        let be = trainer.backend();
        let tokens = generate(be, &trainer.model, trainer.params(), &prompt, &opts, |_| {
            Ok(())
        })?;
        let text = String::from_utf8_lossy(&self.tokenizer.decode_bytes(&tokens)).into_owned();
        let line = serde_json::json!({"step": step, "temperature": SAMPLE_TEMPERATURE, "top_k": SAMPLE_TOP_K, "text": text});
        let path = self.out.join(SAMPLES_FILE);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        writeln!(file, "{line}").map_err(|e| Error::io(&path, e))
    }
}

/// A new run starts without samples; a resumed one keeps those of the
/// steps its checkpoint covers.
fn keep_samples_until(path: &Path, resumed_at: Option<u64>) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = match resumed_at {
        None => String::new(),
        Some(step) => text
            .lines()
            .filter(|line| {
                serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v["step"].as_u64())
                    .is_some_and(|s| s <= step)
            })
            .map(|line| format!("{line}\n"))
            .collect(),
    };
    write_atomic_bytes(path, kept.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::CharTokenizer;

    #[test]
    fn the_eval_line_tracks_the_best_validation_loss() {
        let tokenizer = CharTokenizer::from_text("abc").unwrap();
        let dir = std::env::temp_dir().join(format!("lmforge-observe-{}", std::process::id()));
        let mut o = Observer::new(&dir, Observe::default(), &tokenizer, None).unwrap();
        assert_eq!(
            o.eval_line(0, 4.2, 4.1, Some(40.0)),
            "step 0: train loss 4.2000, val loss 4.1000 (new best), peak memory 40 MiB"
        );
        assert!(o.eval_line(10, 3.0, 3.5, None).ends_with("(new best)"));
        assert_eq!(
            o.eval_line(20, 2.9, 3.6, None),
            "step 20: train loss 2.9000, val loss 3.6000 (best 3.5000 at step 10)"
        );
        assert_eq!(
            o.warn("x".into()),
            Some("warning: x (training goes on)".into())
        );
        assert_eq!(
            o.warn("x".into()),
            None,
            "a repeated warning is printed once"
        );
    }

    #[test]
    fn peak_rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            let mb = peak_rss_mb().unwrap();
            assert!(mb > 1.0 && mb < 1e6, "{mb}");
        }
    }
}
