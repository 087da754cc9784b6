//! `lmforge runs`: one line per run directory, read tolerantly: a field a
//! run does not have (an older version, a run that has not checkpointed
//! yet, a fine-tune's parent) shows as `-`, and unknown fields are ignored.
//! Below the table, a note per run says why its columns are `-` (a run
//! trained from scratch has no parent: that one goes without saying).

use crate::checkpoint::TRAIN_CONFIG_FILE;
use crate::error::{Error, Result};
use crate::model::{Arch, ModelConfig, ParamLayout};
use crate::plot::metrics::METRICS_FILE;
use crate::plot::{RunMetrics, axis::format_count, tokens_per_step};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// What `runs` shows of one run directory.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    pub dir: PathBuf,
    /// `4x128` (layers x embedding dims), or `bigram`.
    pub model: Option<String>,
    pub params: Option<usize>,
    pub tokenizer: Option<String>,
    pub steps: Option<u64>,
    pub best_val: Option<f64>,
    pub tokens_seen: Option<f64>,
    pub wall_s: Option<f64>,
    /// The run a fine-tune started from (`init_from` or `parent` in `train_config.json`).
    pub parent: Option<String>,
    /// Why columns are missing (`steps, best val: no metrics.jsonl`), and
    /// metrics lines left out.
    pub notes: Vec<String>,
}

/// Whether `dir` looks like a run directory.
pub fn is_run(dir: &Path) -> bool {
    dir.join(TRAIN_CONFIG_FILE).is_file() || dir.join(METRICS_FILE).is_file()
}

/// The JSON of `path`, or why there is none.
fn read_json(path: &Path) -> std::result::Result<Value, String> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("no {name}"),
        _ => format!("{name}: {e}"),
    })?;
    serde_json::from_str(&text).map_err(|e| format!("{name} is not valid JSON ({e})"))
}

/// The model config: the training config's, else `config.json`'s; or why
/// neither can be read.
fn model_config(train: Option<&Value>, dir: &Path) -> std::result::Result<ModelConfig, String> {
    let from_train = train.and_then(|v| serde_json::from_value(v["config"].clone()).ok());
    let config = match from_train {
        Some(config) => config,
        None => crate::checkpoint::load_config(dir).map_err(|e| e.to_string())?,
    };
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

/// A string field at the top of the run file or in its `config`.
fn field(train: Option<&Value>, keys: &[&str]) -> Option<String> {
    let train = train?;
    let found = keys.iter().find_map(|k| {
        let v = [&train[*k], &train["config"][*k]]
            .into_iter()
            .find(|v| !v.is_null())?;
        Some(v.clone())
    })?;
    match found {
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

/// A tokenizer path shows as its file name.
fn tokenizer_name(spec: String) -> String {
    match spec.as_str() {
        "char" | "gpt2" => spec,
        path => Path::new(path)
            .file_name()
            .map_or(spec.clone(), |n| n.to_string_lossy().into_owned()),
    }
}

impl RunSummary {
    /// Read what there is of the run in `dir`.
    pub fn read(dir: &Path) -> Self {
        let train = read_json(&dir.join(TRAIN_CONFIG_FILE));
        let model = model_config(train.as_ref().ok(), dir);
        let metrics = RunMetrics::load(dir);
        let notes = notes(&train, &model, &metrics, dir);
        let (train, model, metrics) = (train.as_ref().ok(), model.ok(), metrics.ok());
        let steps = metrics.as_ref().map(RunMetrics::last_step);
        RunSummary {
            dir: dir.to_path_buf(),
            model: model.as_ref().map(|m| match m.arch {
                Arch::Bigram => "bigram".to_string(),
                Arch::Gpt => format!("{}x{}", m.n_layer, m.n_embd),
                Arch::Llama => format!("llama {}x{}", m.n_layer, m.n_embd),
            }),
            params: model.as_ref().map(|m| ParamLayout::new(m).total),
            tokenizer: field(train, &["tokenizer"]).map(tokenizer_name),
            steps,
            best_val: metrics.as_ref().and_then(|m| m.best_val()).map(|b| b.1),
            tokens_seen: steps.zip(tokens_per_step(dir)).map(|(s, t)| s as f64 * t),
            wall_s: metrics.as_ref().and_then(RunMetrics::elapsed_s),
            parent: field(train, &["init_from", "parent"]),
            notes,
        }
    }
}

/// Why the columns a run lacks are `-`, and the metrics lines left out.
fn notes(
    train: &std::result::Result<Value, String>,
    model: &std::result::Result<ModelConfig, String>,
    metrics: &Result<RunMetrics>,
    dir: &Path,
) -> Vec<String> {
    let mut notes = Vec::new();
    if let Err(why) = model {
        notes.push(format!("model, params: {why}"));
    }
    match train {
        Err(why) => notes.push(format!("tokenizer: {why}")),
        Ok(train) if field(Some(train), &["tokenizer"]).is_none() => {
            notes.push(format!("tokenizer: {TRAIN_CONFIG_FILE} names none"))
        }
        Ok(_) => {}
    }
    match metrics {
        Err(e) => notes.push(format!("steps, best val, tokens, time: {e}")),
        Ok(m) => {
            if m.best_val().is_none() {
                notes.push("best val: no finite evaluation logged".into());
            }
            if tokens_per_step(dir).is_none() {
                notes.push(format!(
                    "tokens: {TRAIN_CONFIG_FILE} has no batch and block size"
                ));
            }
            if m.elapsed_s().is_none() {
                notes.push("time: no elapsed_s logged".into());
            }
            notes.extend(m.bad_lines.iter().cloned());
        }
    }
    notes
}

/// The runs in `dir`: `dir` itself if it is one, else every run directory
/// directly inside it, sorted by name. No run at all is an error.
pub fn list_runs(dir: &Path) -> Result<Vec<RunSummary>> {
    if is_run(dir) {
        return Ok(vec![RunSummary::read(dir)]);
    }
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && is_run(p))
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        return Err(Error::Data(format!(
            "{}: no run directories here (a run has train_config.json or metrics.jsonl)",
            dir.display()
        )));
    }
    Ok(dirs.iter().map(|d| RunSummary::read(d)).collect())
}

/// The table `lmforge runs DIR` prints: [`list_runs`] then [`table`].
pub fn runs_table(dir: &Path) -> Result<String> {
    Ok(table(&list_runs(dir)?, dir))
}

/// Seconds as `42s`, `3m05s`, `1h02m`.
pub fn format_duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match (s / 3600, s / 60 % 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, min, sec) => format!("{min}m{sec:02}s"),
        (h, min, _) => format!("{h}h{min:02}m"),
    }
}

/// The cells of one row, `-` where a value is missing.
fn cells(run: &RunSummary, base: &Path) -> Vec<String> {
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let name = run.dir.strip_prefix(base).unwrap_or(&run.dir);
    let name = if name.as_os_str().is_empty() {
        &run.dir
    } else {
        name
    };
    vec![
        name.display().to_string(),
        or_dash(run.model.clone()),
        or_dash(run.params.map(|p| format_count(p as f64))),
        or_dash(run.tokenizer.clone()),
        or_dash(run.steps.map(|s| s.to_string())),
        or_dash(run.best_val.map(|v| format!("{v:.4}"))),
        or_dash(run.tokens_seen.map(format_count)),
        or_dash(run.wall_s.map(format_duration)),
        or_dash(run.parent.clone()),
    ]
}

/// The runs as an aligned text table with a header (names relative to `base`).
pub fn table(runs: &[RunSummary], base: &Path) -> String {
    let header = [
        "run",
        "model",
        "params",
        "tokenizer",
        "steps",
        "best val",
        "tokens",
        "time",
        "parent",
    ];
    let mut rows = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    rows.extend(runs.iter().map(|r| cells(r, base)));
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, w))| match c {
                0 | 1 | 3 | 8 => format!("{cell:<w$}"),
                _ => format!("{cell:>w$}"),
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    let noted: Vec<(&String, &RunSummary)> = rows[1..]
        .iter()
        .map(|row| &row[0])
        .zip(runs)
        .filter(|(_, run)| !run.notes.is_empty())
        .collect();
    if !noted.is_empty() {
        out.push_str("\nwhy \"-\":\n");
    }
    for (name, run) in noted {
        out.push_str(&format!("  {name}: {}\n", run.notes.join("; ")));
    }
    out
}
