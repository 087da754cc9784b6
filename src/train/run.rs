//! The run directory's training files: `train_config.json` (what was
//! trained on, and how), `tokenizer.json` and the `metrics.jsonl` log.
//! The model and its training state are [`crate::checkpoint`]'s.

use super::config::TrainConfig;
use crate::checkpoint;
use crate::error::{Error, Result};
use crate::fsutil::write_atomic_bytes;
use crate::tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

const RUN_FORMAT: &str = "lmforge-run";
const RUN_VERSION: u32 = 1;

fn run_format() -> String {
    RUN_FORMAT.into()
}

fn run_version() -> u32 {
    RUN_VERSION
}

/// `train_config.json`. Files written before `format` and `version` existed
/// read as version 1.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunFile {
    #[serde(default = "run_format")]
    pub format: String,
    #[serde(default = "run_version")]
    pub version: u32,
    /// The corpus (absolute path), or `None` for the built-in demo corpus.
    pub data: Option<PathBuf>,
    pub config: TrainConfig,
}

impl RunFile {
    pub fn new(data: Option<&Path>, config: &TrainConfig) -> Self {
        RunFile {
            format: run_format(),
            version: RUN_VERSION,
            data: data.map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())),
            config: config.clone(),
        }
    }

    /// Read the run file of the run directory `out`.
    pub fn load(out: &Path) -> Result<Self> {
        let path = out.join(checkpoint::TRAIN_CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let run: RunFile =
            serde_json::from_str(&text).map_err(|e| Error::format(&path, e.to_string()))?;
        if run.format != RUN_FORMAT {
            return Err(Error::format(&path, "not an lmforge run file"));
        }
        if run.version > RUN_VERSION {
            return Err(Error::format(
                &path,
                format!(
                    "run file version {}; this lmforge reads version {RUN_VERSION}: update lmforge",
                    run.version
                ),
            ));
        }
        Ok(run)
    }

    /// Create the run directory `out` (if needed) and write this file and
    /// the tokenizer into it.
    pub fn write(&self, out: &Path, tokenizer: &dyn Tokenizer) -> Result<()> {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let json = serde_json::to_vec_pretty(self).expect("a run file always serialises");
        write_atomic_bytes(&out.join(checkpoint::TRAIN_CONFIG_FILE), &json)?;
        tokenizer.save(&out.join(checkpoint::TOKENIZER_FILE))
    }
}

/// `metrics.jsonl`: one JSON object per line, appended as training goes.
pub struct Metrics {
    path: PathBuf,
    file: std::fs::File,
}

impl Metrics {
    /// Open the log of the run in `out`. A new run starts it afresh; a run
    /// resumed after `resumed_at` steps keeps the lines of those steps only
    /// (later ones came after the checkpoint and will be written again).
    pub fn open(out: &Path, resumed_at: Option<u64>) -> Result<Self> {
        let path = out.join("metrics.jsonl");
        match resumed_at {
            Some(step) => truncate_metrics(&path, step)?,
            None if path.exists() => {
                std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?
            }
            None => {}
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        Ok(Metrics { path, file })
    }

    pub fn log(&mut self, value: serde_json::Value) -> Result<()> {
        writeln!(self.file, "{value}").map_err(|e| Error::io(&self.path, e))
    }
}

/// Keep only the metrics lines of steps up to `step` (those a checkpoint covers).
fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s <= step)
        })
        .map(|line| format!("{line}\n"))
        .collect();
    write_atomic_bytes(path, kept.as_bytes())
}
