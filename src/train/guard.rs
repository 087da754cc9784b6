//! What keeps a day of training from being lost or silently wrong:
//! - a new run never writes over an existing one unless asked (`--overwrite`);
//! - a resume says clearly when there is nothing to resume from yet;
//! - one process at a time writes a run, and the temporaries a killed
//!   process left are removed before a run starts ([`crate::rundir`]);
//! - a loss or gradient norm that is NaN or infinite stops training (or,
//!   with `--on-nan skip`, drops that step), so no checkpoint holds NaN.

use super::TrainConfig;
use crate::checkpoint::{CONFIG_FILE, MODEL_FILE, STATE_FILE, TOKENIZER_FILE, TRAIN_CONFIG_FILE};
use crate::error::{Error, Result};
use std::path::Path;

/// The metrics log's name in a run directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// Every file a run directory holds: what `--overwrite` replaces.
pub const RUN_FILES: [&str; 6] = [
    TRAIN_CONFIG_FILE,
    MODEL_FILE,
    STATE_FILE,
    METRICS_FILE,
    CONFIG_FILE,
    TOKENIZER_FILE,
];

/// Consecutive non-finite steps `--on-nan skip` drops before it gives up:
/// the model itself has gone bad, and skipping more would only burn time.
pub const MAX_SKIPPED_IN_A_ROW: u32 = 10;

/// What to do with a step whose loss or gradient norm is NaN or infinite.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OnNan {
    /// Stop with an error naming the step; the last checkpoint stays as it was.
    #[default]
    Stop,
    /// Drop the step (no update) and go on, as large-model trainers do;
    /// stop after [`MAX_SKIPPED_IN_A_ROW`] such steps in a row.
    Skip,
}

/// The safety options of one training session (not saved with the run).
#[derive(Debug, Clone, Copy, Default)]
pub struct Safeguards {
    /// Replace a run already in the output directory.
    pub overwrite: bool,
    pub on_nan: OnNan,
    /// Allocate even when the memory estimate exceeds what is available.
    pub ignore_memory_check: bool,
    /// Train on a shard directory `prepare` has not finished.
    pub allow_partial: bool,
    /// The memory of the device that trains, in bytes, when it is not the
    /// host's (a GPU's): what the memory check compares with. `None`: the
    /// host's memory available now ([`crate::memory::available`]).
    pub device_memory: Option<u64>,
    /// The CPU's product type (`--dtype`): bf16 adds the operands' copies
    /// to the estimate.
    pub dtype: crate::backend::cpu::Dtype,
}

/// Make `out` ready for a new run: refuse a directory holding a run unless
/// `overwrite`, in which case that run's files are deleted first (so that a
/// new run stopped early never leaves the old checkpoint beside its config).
pub fn prepare_new_run(out: &Path, overwrite: bool) -> Result<()> {
    let present: Vec<&str> = RUN_FILES
        .iter()
        .copied()
        .filter(|name| out.join(name).exists())
        .collect();
    // A lone tokenizer.json or config.json may be anything; the others mark a run.
    let is_run = present
        .iter()
        .any(|name| ![CONFIG_FILE, TOKENIZER_FILE].contains(name));
    if !is_run {
        return Ok(());
    }
    if !overwrite {
        return Err(Error::RunExists {
            path: out.to_path_buf(),
            files: present.join(", "),
        });
    }
    for name in present {
        let path = out.join(name);
        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

/// Refuse a configuration too big for this machine before anything is
/// allocated. `--ignore-memory-check` skips the comparison with the memory
/// available, never the overflow check (such a size cannot be allocated).
/// An unknown vocabulary (before the corpus is read) counts as one token.
pub fn check_memory(config: &TrainConfig, guards: &Safeguards) -> Result<()> {
    let model = crate::model::ModelConfig {
        vocab_size: config.model.vocab_size.max(1),
        ..config.model.clone()
    };
    let trained = match &config.finetune {
        Some(ft) => {
            crate::memory::param_count(&model)?; // sane before it is laid out
            let layout = crate::model::ParamLayout::new(&model);
            let lora = model.lora.is_some();
            Some(layout.total - crate::finetune::trainable_from(Some(ft), &layout, lora)?)
        }
        None => None,
    };
    let estimate = crate::memory::training(&model, config.batch_size, trained, guards.dtype)?;
    if guards.ignore_memory_check {
        return Ok(());
    }
    let available = match guards.device_memory {
        Some(bytes) => Some(crate::memory::Available {
            bytes: bytes as u128,
            source: "the GPU's memory".into(),
        }),
        None => crate::memory::available(),
    };
    crate::memory::check(&estimate, "training this model", available.as_ref())
}

/// Refuse shards that `prepare` has not finished (it was interrupted, or
/// still runs) unless `allow_partial`, which trains on them with a warning.
pub fn check_finished(
    source: &super::corpus::Source,
    data: Option<&Path>,
    allow_partial: bool,
) -> Result<()> {
    let super::corpus::Source::Shards(set) = source else {
        return Ok(());
    };
    let Some((done, inputs)) = set.unfinished() else {
        return Ok(());
    };
    let dir = data.map_or(String::new(), |d| d.display().to_string());
    let what = format!("{dir} was not finished ({done} of {inputs} inputs done)");
    if allow_partial {
        crate::diag::warn(format!(
            "{what}; training on what it holds (--allow-partial)"
        ));
        return Ok(());
    }
    Err(Error::Data(format!(
        "{what}; run the same `lmforge prepare` again to finish it, or pass --allow-partial \
         to train on what it holds"
    )))
}

/// Refuse to resume `out` when it holds no checkpoint, saying why.
pub fn check_resumable(out: &Path) -> Result<()> {
    if !out.join(TRAIN_CONFIG_FILE).exists() {
        return Err(Error::Config(format!(
            "--resume {0}: no training run here ({TRAIN_CONFIG_FILE} is missing); \
             start one with `lmforge train --out {0}`",
            out.display()
        )));
    }
    if !out.join(STATE_FILE).exists() {
        return Err(Error::Config(format!(
            "--resume {0}: the run stopped before its first checkpoint ({STATE_FILE} is \
             missing), so there is nothing to resume; start it again with the same options \
             and `--out {0} --overwrite`",
            out.display()
        )));
    }
    Ok(())
}

/// Why `loss` / `grad_norm` of update `step` (counting from 1) cannot be
/// kept, or `None` when both are finite. An unknown norm (NaN because the
/// update was never computed) counts as non-finite.
pub fn non_finite(loss: f32, grad_norm: f32) -> Option<String> {
    if !loss.is_finite() {
        return Some(format!("the loss is {loss}"));
    }
    if !grad_norm.is_finite() {
        return Some(format!("the gradient norm is {grad_norm} (loss {loss:.4})"));
    }
    None
}

/// The error that stops a run at a non-finite step; `skipping` when
/// `--on-nan skip` gave up (then it is not suggested again).
pub fn stopped_at(
    step: u64,
    why: &str,
    out: &Path,
    last_checkpoint: Option<u64>,
    skipping: bool,
) -> Error {
    let kept = match last_checkpoint {
        Some(s) => format!(
            "the last checkpoint in {}, of step {s}, is unchanged",
            out.display()
        ),
        None => "no checkpoint had been saved yet".to_string(),
    };
    let skip = if skipping {
        ""
    } else {
        ", or --on-nan skip to drop such steps"
    };
    Error::NonFinite(format!(
        "step {step}: {why}; training stopped without saving: {kept}. Try a lower --lr, a \
         --grad-clip, a larger --eps{skip}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_run_is_kept_unless_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        prepare_new_run(dir.path(), false).unwrap();
        std::fs::write(dir.path().join(TOKENIZER_FILE), b"{}").unwrap();
        prepare_new_run(dir.path(), false).expect("a lone tokenizer is not a run");
        std::fs::write(dir.path().join(MODEL_FILE), b"weights").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
        let err = prepare_new_run(dir.path(), false).unwrap_err().to_string();
        assert!(
            err.contains("--resume") && err.contains("--overwrite"),
            "{err}"
        );
        assert!(err.contains(MODEL_FILE), "{err}");
        assert!(dir.path().join(MODEL_FILE).exists());
        prepare_new_run(dir.path(), true).unwrap();
        assert!(!dir.path().join(MODEL_FILE).exists());
        assert!(!dir.path().join(TOKENIZER_FILE).exists());
        assert!(dir.path().join("notes.txt").exists(), "other files stay");
    }

    #[test]
    fn resuming_without_a_checkpoint_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let err = check_resumable(dir.path()).unwrap_err().to_string();
        assert!(err.contains("no training run here"), "{err}");
        std::fs::write(dir.path().join(TRAIN_CONFIG_FILE), b"{}").unwrap();
        let err = check_resumable(dir.path()).unwrap_err().to_string();
        assert!(err.contains("before its first checkpoint"), "{err}");
        std::fs::write(dir.path().join(STATE_FILE), b"").unwrap();
        check_resumable(dir.path()).unwrap();
    }

    #[test]
    fn only_finite_steps_pass() {
        assert_eq!(non_finite(1.5, 0.3), None);
        assert!(non_finite(f32::NAN, 0.3).is_some());
        assert!(non_finite(1.5, f32::INFINITY).is_some());
        let err = stopped_at(7, "the loss is NaN", Path::new("r"), Some(5), false).to_string();
        assert!(err.contains("step 7") && err.contains("step 5"), "{err}");
    }
}
