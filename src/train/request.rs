//! What `lmforge train` is asked for, as options (its flags, or the keyword
//! arguments of the Python package's `lmforge.train`), turned into where to
//! write and how to [`Start`]: a new run from a preset, a fine-tune, or a
//! resumption. The command line and the Python package both go through
//! [`TrainRequest::start`], so the same options mean the same run; a
//! library caller may build a [`Start`] itself. Either way
//! [`super::plan::resolve`] makes it a checked plan.

use super::Preset;
use super::config::{self, TrainConfig, TrainOverrides};
use crate::error::{Error, Result};
use crate::finetune::policy;
use crate::model::{LoraConfig, LoraTarget};
use std::path::PathBuf;

/// A new run, a fine-tune of a trained model, or the continuation of the
/// run in the output directory.
pub enum Start {
    New(Box<TrainConfig>),
    FineTune(Box<FineTuneRequest>),
    /// Continue from the last checkpoint, with the saved configuration changed
    /// by these overrides, applied in order (training options only, e.g. `max_iters`).
    Resume(Vec<TrainOverrides>),
}

/// What `train --init-from` asks for.
pub struct FineTuneRequest {
    /// The training options: [`policy::training_config`] gives the
    /// fine-tune defaults (the `finetune` preset, LoRA's learning rate).
    pub config: TrainConfig,
    /// The overrides as given: model-shape flags are refused (the parent decides the shape).
    pub given: TrainOverrides,
    /// A run, a Hugging Face folder, or a model name in the local cache.
    pub init_from: String,
    pub freeze_embeddings: bool,
    pub freeze_layers: usize,
    /// LoRA's settings; no targets means the parent architecture's defaults
    /// ([`crate::model::LoraTarget::defaults`]).
    pub lora: Option<LoraConfig>,
}

/// Fine-tuning: start from a trained model instead of random weights.
#[derive(Debug, Clone, Default)]
pub struct FineTuneOptions {
    /// A run directory, a Hugging Face folder, or a model name in the local cache.
    pub init_from: Option<String>,
    pub freeze_embeddings: bool,
    /// Freeze the embeddings and the first N blocks.
    pub freeze_layers: usize,
    /// Train low-rank adapters of this rank instead of the weights (LoRA).
    pub lora_rank: Option<usize>,
    /// Default: 2 x rank.
    pub lora_alpha: Option<f32>,
    /// Default: the architecture's ([`LoraTarget::defaults`]).
    pub lora_targets: Option<Vec<LoraTarget>>,
    /// Train on the conversations of this JSON Lines file.
    pub sft: Option<PathBuf>,
}

/// The options of one `lmforge train`.
#[derive(Debug, Clone, Default)]
pub struct TrainRequest {
    /// The corpus; `None`: the built-in one (or, resuming, the run's own).
    pub data: Option<PathBuf>,
    pub preset: Option<Preset>,
    /// A TOML file of hyperparameters, applied over the preset.
    pub config: Option<PathBuf>,
    /// Default: `runs/<preset>` (`runs/finetune` for a fine-tune).
    pub out: Option<PathBuf>,
    /// Continue the run in this directory.
    pub resume: Option<PathBuf>,
    /// The hyperparameter flags.
    pub overrides: TrainOverrides,
    pub finetune: FineTuneOptions,
}

impl TrainRequest {
    /// The run directory, the corpus and how the run starts. Options that
    /// cannot go together are refused by their flag names.
    pub fn start(&self) -> Result<(PathBuf, Option<PathBuf>, Start)> {
        self.check_combinations()?;
        let ft = &self.finetune;
        let data = ft.sft.clone().or(self.data.clone());
        if let Some(dir) = &self.resume {
            let mut overrides = Vec::new();
            if let Some(path) = &self.config {
                overrides.push(TrainOverrides::from_toml_file(path)?);
            }
            overrides.push(self.overrides.clone());
            return Ok((dir.clone(), data, Start::Resume(overrides)));
        }
        if let Some(init_from) = &ft.init_from {
            let out = self.out.clone().unwrap_or_else(|| "runs/finetune".into());
            let request = self.fine_tune_request(init_from)?;
            return Ok((out, data, Start::FineTune(Box::new(request))));
        }
        let preset = self.preset.unwrap_or(Preset::CharCpu);
        let cfg = config::resolve(preset, self.config.as_deref(), &self.overrides)?;
        let default_out = PathBuf::from("runs").join(preset.to_string());
        let out = self.out.clone().unwrap_or(default_out);
        Ok((out, data, Start::New(Box::new(cfg))))
    }

    /// The command line's `conflicts_with` and `requires`, for callers
    /// without `clap`.
    fn check_combinations(&self) -> Result<()> {
        let ft = &self.finetune;
        let conflicts = [
            (
                "--resume",
                self.resume.is_some(),
                "--preset",
                self.preset.is_some(),
            ),
            (
                "--resume",
                self.resume.is_some(),
                "--out",
                self.out.is_some(),
            ),
            (
                "--resume",
                self.resume.is_some(),
                "--init-from",
                ft.init_from.is_some(),
            ),
            ("--sft", ft.sft.is_some(), "--data", self.data.is_some()),
        ];
        if let Some((a, _, b, _)) = conflicts.iter().find(|(_, x, _, y)| *x && *y) {
            return Err(Error::Config(format!("{a} cannot be used with {b}")));
        }
        let requires = [
            (
                "--freeze-embeddings",
                ft.freeze_embeddings,
                "--init-from",
                ft.init_from.is_some(),
            ),
            (
                "--freeze-layers",
                ft.freeze_layers > 0,
                "--init-from",
                ft.init_from.is_some(),
            ),
            (
                "--lora-rank",
                ft.lora_rank.is_some(),
                "--init-from",
                ft.init_from.is_some(),
            ),
            (
                "--sft",
                ft.sft.is_some(),
                "--init-from",
                ft.init_from.is_some(),
            ),
            (
                "--lora-alpha",
                ft.lora_alpha.is_some(),
                "--lora-rank",
                ft.lora_rank.is_some(),
            ),
            (
                "--lora-targets",
                ft.lora_targets.is_some(),
                "--lora-rank",
                ft.lora_rank.is_some(),
            ),
        ];
        match requires
            .iter()
            .find(|(_, given, _, needed)| *given && !*needed)
        {
            Some((a, _, b, _)) => Err(Error::Config(format!("{a} needs {b}"))),
            None => Ok(()),
        }
    }

    /// The fine-tune of `init_from` asked for, with its training options.
    fn fine_tune_request(&self, init_from: &str) -> Result<FineTuneRequest> {
        let ft = &self.finetune;
        let lora = ft
            .lora_rank
            .map(|rank| policy::lora(rank, ft.lora_alpha, ft.lora_targets.clone()));
        let (preset, file) = (self.preset, self.config.as_deref());
        let config =
            policy::training_config(preset, file, &self.overrides, &lora, ft.sft.is_some())?;
        Ok(FineTuneRequest {
            config,
            given: self.overrides.clone(),
            init_from: init_from.to_string(),
            freeze_embeddings: ft.freeze_embeddings,
            freeze_layers: ft.freeze_layers,
            lora,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicting_and_missing_options_are_named() {
        let resume_with_out = TrainRequest {
            resume: Some("runs/a".into()),
            out: Some("runs/b".into()),
            ..Default::default()
        };
        let err = resume_with_out.start().err().unwrap().to_string();
        assert_eq!(err, "invalid config: --resume cannot be used with --out");
        let alpha_alone = TrainRequest {
            finetune: FineTuneOptions {
                init_from: Some("runs/a".into()),
                lora_alpha: Some(4.0),
                ..Default::default()
            },
            ..Default::default()
        };
        let err = alpha_alone.start().err().unwrap().to_string();
        assert_eq!(err, "invalid config: --lora-alpha needs --lora-rank");
    }

    #[test]
    fn a_new_run_defaults_to_char_cpu_in_runs() {
        let (out, data, start) = TrainRequest::default().start().unwrap();
        assert_eq!(out, PathBuf::from("runs/char-cpu"));
        assert_eq!(data, None);
        let Start::New(cfg) = start else {
            panic!("a new run")
        };
        assert_eq!(*cfg, Preset::CharCpu.config());
    }
}
