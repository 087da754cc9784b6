//! Training configuration: every hyperparameter in one struct, filled from a
//! preset, then a TOML file (`--config`), then command-line flags, each
//! overriding the one before.

use crate::error::{Error, Result};
use crate::model::{Activation, Arch, ModelConfig, Norm};
use crate::optim::{AdamWConfig, LrSchedule, ScheduleKind};
use crate::tokenizer::TokenizerSpec;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Everything a training run needs to know, saved as `train_config.json` in the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub preset: String,
    /// `char` (the training text's characters), `gpt2`, or a `tokenizer.json` path.
    #[serde(default = "default_tokenizer")]
    pub tokenizer: TokenizerSpec,
    // Model (the vocabulary size comes from the tokenizer).
    pub arch: Arch,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    pub block_size: usize,
    pub dropout: f32,
    pub norm: Norm,
    pub activation: Activation,
    pub tie_embeddings: bool,
    pub bias: bool,
    pub qkv_bias: bool,
    pub lm_head_bias: bool,
    // Data.
    pub batch_size: usize,
    pub val_fraction: f64,
    // Optimisation.
    pub max_iters: u64,
    pub lr: f32,
    pub min_lr: f32,
    pub schedule: ScheduleKind,
    pub warmup_iters: u64,
    /// Iterations over which the cosine schedule decays (defaults to `max_iters`).
    pub lr_decay_iters: Option<u64>,
    pub grad_accum: usize,
    /// Clip the gradient norm to this value; 0 disables clipping.
    pub grad_clip: f32,
    pub weight_decay: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    // Evaluation, logging, checkpoints.
    pub eval_interval: u64,
    pub eval_iters: u64,
    pub checkpoint_interval: u64,
    pub seed: u64,
}

fn default_tokenizer() -> TokenizerSpec {
    TokenizerSpec::Char
}

/// Names of the built-in presets, for `--help` and error messages.
pub const PRESETS: &[&str] = &["bigram", "course", "char-cpu", "char-baby", "gpt2"];

impl TrainConfig {
    /// A built-in preset. See the README for where each comes from.
    pub fn preset(name: &str) -> Result<Self> {
        // nanoGPT's Shakespeare-char settings, the base of both char presets.
        let char_cpu = TrainConfig {
            preset: name.to_string(),
            tokenizer: default_tokenizer(),
            arch: Arch::Gpt,
            n_layer: 4,
            n_head: 4,
            n_embd: 128,
            block_size: 64,
            dropout: 0.0,
            norm: Norm::Pre,
            activation: Activation::Gelu,
            tie_embeddings: true,
            bias: false,
            qkv_bias: false,
            lm_head_bias: false,
            batch_size: 12,
            val_fraction: 0.1,
            max_iters: 2000,
            lr: 1e-3,
            min_lr: 1e-4,
            schedule: ScheduleKind::Cosine,
            warmup_iters: 100,
            lr_decay_iters: None,
            grad_accum: 1,
            grad_clip: 1.0,
            weight_decay: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            eval_interval: 250,
            eval_iters: 20,
            checkpoint_interval: 250,
            seed: 1337,
        };
        // The course notebooks: plain torch.optim.AdamW defaults, constant lr, no clipping.
        let course = TrainConfig {
            n_layer: 1,
            n_head: 8,
            n_embd: 128,
            block_size: 32,
            batch_size: 8,
            dropout: 0.2,
            norm: Norm::Post,
            activation: Activation::Relu,
            tie_embeddings: false,
            bias: true,
            qkv_bias: false,
            lm_head_bias: true,
            lr: 1e-4,
            min_lr: 1e-4,
            schedule: ScheduleKind::Constant,
            warmup_iters: 0,
            max_iters: 3000,
            grad_clip: 0.0,
            weight_decay: 0.01,
            beta2: 0.999,
            eval_interval: 500,
            eval_iters: 100,
            checkpoint_interval: 500,
            ..char_cpu.clone()
        };
        Ok(match name {
            "char-cpu" => char_cpu,
            "char-baby" => TrainConfig {
                n_layer: 6,
                n_head: 6,
                n_embd: 384,
                block_size: 256,
                batch_size: 64,
                dropout: 0.2,
                max_iters: 5000,
                eval_iters: 200,
                ..char_cpu
            },
            "course" => course,
            // GPT-2 124M (nanoGPT's train_gpt2 settings, one process).
            "gpt2" => TrainConfig {
                tokenizer: TokenizerSpec::Gpt2,
                n_layer: 12,
                n_head: 12,
                n_embd: 768,
                block_size: 1024,
                batch_size: 12,
                grad_accum: 40,
                bias: true,
                qkv_bias: true,
                max_iters: 600_000,
                lr: 6e-4,
                min_lr: 6e-5,
                warmup_iters: 2000,
                beta2: 0.95,
                eval_interval: 1000,
                eval_iters: 200,
                checkpoint_interval: 1000,
                ..char_cpu.clone()
            },
            "bigram" => TrainConfig {
                arch: Arch::Bigram,
                block_size: 8,
                batch_size: 32,
                dropout: 0.0,
                lr: 1e-2,
                min_lr: 1e-2,
                eval_interval: 300,
                eval_iters: 200,
                checkpoint_interval: 1000,
                ..course
            },
            other => {
                return Err(Error::Config(format!(
                    "unknown preset {other:?}; choose one of {}",
                    PRESETS.join(", ")
                )));
            }
        })
    }

    /// The model this config describes, for a tokenizer of `vocab_size` tokens.
    pub fn model_config(&self, vocab_size: usize) -> ModelConfig {
        ModelConfig {
            arch: self.arch,
            vocab_size,
            block_size: self.block_size,
            n_layer: self.n_layer,
            n_head: self.n_head,
            n_embd: self.n_embd,
            dropout: self.dropout,
            norm: self.norm,
            activation: self.activation,
            tie_embeddings: self.tie_embeddings,
            bias: self.bias,
            qkv_bias: self.qkv_bias,
            lm_head_bias: self.lm_head_bias,
        }
    }

    pub fn schedule(&self) -> LrSchedule {
        LrSchedule {
            kind: self.schedule,
            lr: self.lr,
            min_lr: self.min_lr,
            warmup_iters: self.warmup_iters,
            decay_iters: self.lr_decay_iters.unwrap_or(self.max_iters),
        }
    }

    pub fn adamw(&self) -> AdamWConfig {
        AdamWConfig {
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
        }
    }

    /// Reject settings training cannot run with, naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: &str| Err(Error::Config(msg.to_string()));
        if self.batch_size == 0 || self.grad_accum == 0 {
            return bad("batch_size and grad_accum must be at least 1");
        }
        if self.eval_interval == 0 || self.eval_iters == 0 || self.checkpoint_interval == 0 {
            return bad("eval_interval, eval_iters and checkpoint_interval must be at least 1");
        }
        if !(self.val_fraction > 0.0 && self.val_fraction < 1.0) {
            return bad("val_fraction must be strictly between 0 and 1");
        }
        if !(self.lr > 0.0) || self.min_lr < 0.0 || self.grad_clip < 0.0 || self.weight_decay < 0.0
        {
            return bad(
                "lr must be positive; min_lr, grad_clip and weight_decay must not be negative",
            );
        }
        if !(0.0..1.0).contains(&self.beta1)
            || !(0.0..1.0).contains(&self.beta2)
            || !(self.eps > 0.0)
        {
            return bad("beta1 and beta2 must be in [0, 1) and eps positive");
        }
        self.model_config(1).validate()
    }
}

/// Optional overrides, from a TOML file or from flags; each `Some` replaces the
/// preset's value. Field names are the flag names with `_` for `-`.
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct TrainOverrides {
    /// Tokenizer: "char" (the vocabulary is the training text's characters),
    /// "gpt2" (GPT-2's byte-level BPE), or a tokenizer.json path.
    #[arg(long)]
    pub tokenizer: Option<TokenizerSpec>,
    /// Model: "bigram" or "gpt".
    #[arg(long, value_parser = parse_arch)]
    pub arch: Option<Arch>,
    /// Number of transformer blocks.
    #[arg(long)]
    pub n_layer: Option<usize>,
    /// Attention heads per block (must divide --n-embd).
    #[arg(long)]
    pub n_head: Option<usize>,
    /// Embedding width C.
    #[arg(long)]
    pub n_embd: Option<usize>,
    /// Context length T (tokens per training window).
    #[arg(long = "block", alias = "block-size")]
    #[serde(alias = "block")]
    pub block_size: Option<usize>,
    /// Dropout probability (embeddings, attention weights, residual branches).
    #[arg(long)]
    pub dropout: Option<f32>,
    /// Layer-norm placement: "pre" (GPT-2) or "post" (the course notebook).
    #[arg(long, value_parser = parse_norm)]
    pub norm: Option<Norm>,
    /// Feed-forward activation: "gelu" (tanh approximation) or "relu".
    #[arg(long, value_parser = parse_activation)]
    pub activation: Option<Activation>,
    /// Share the token embedding with the LM head (true/false).
    #[arg(long)]
    pub tie_embeddings: Option<bool>,
    /// Biases in linear layers and layer norms (true/false).
    #[arg(long)]
    pub bias: Option<bool>,
    /// Bias in the query/key/value projection (true/false).
    #[arg(long)]
    pub qkv_bias: Option<bool>,
    /// Bias in the LM head (true/false).
    #[arg(long)]
    pub lm_head_bias: Option<bool>,
    /// Sequences per micro-batch B.
    #[arg(long = "batch", alias = "batch-size")]
    #[serde(alias = "batch")]
    pub batch_size: Option<usize>,
    /// Fraction of the text (its tail) held out for validation.
    #[arg(long)]
    pub val_fraction: Option<f64>,
    /// Total optimizer updates.
    #[arg(long)]
    pub max_iters: Option<u64>,
    /// Peak learning rate.
    #[arg(long)]
    pub lr: Option<f32>,
    /// Learning rate at the end of the cosine decay.
    #[arg(long)]
    pub min_lr: Option<f32>,
    /// Learning-rate schedule after warmup: "cosine" or "constant".
    #[arg(long, value_parser = parse_schedule)]
    pub schedule: Option<ScheduleKind>,
    /// Iterations of linear warmup.
    #[arg(long)]
    pub warmup_iters: Option<u64>,
    /// Iterations over which the cosine decays to --min-lr (default: --max-iters).
    #[arg(long)]
    pub lr_decay_iters: Option<u64>,
    /// Micro-batches per optimizer update (gradient accumulation).
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Clip the gradient norm to this value (0: no clipping).
    #[arg(long)]
    pub grad_clip: Option<f32>,
    /// AdamW decoupled weight decay (matrices only).
    #[arg(long)]
    pub weight_decay: Option<f32>,
    /// AdamW's first-moment decay (momentum).
    #[arg(long)]
    pub beta1: Option<f32>,
    /// AdamW's second-moment decay.
    #[arg(long)]
    pub beta2: Option<f32>,
    /// AdamW's denominator epsilon.
    #[arg(long)]
    pub eps: Option<f32>,
    /// Evaluate train and validation loss every N iterations.
    #[arg(long)]
    pub eval_interval: Option<u64>,
    /// Batches averaged for each evaluation.
    #[arg(long)]
    pub eval_iters: Option<u64>,
    /// Save a checkpoint every N iterations (and at the end, and on Ctrl-C).
    #[arg(long)]
    pub checkpoint_interval: Option<u64>,
    /// Random seed: the same seed and thread count give the same losses.
    #[arg(long)]
    pub seed: Option<u64>,
}

fn parse_enum<T: serde::de::DeserializeOwned>(s: &str) -> std::result::Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_lowercase()))
        .map_err(|_| format!("invalid value {s:?}"))
}
fn parse_arch(s: &str) -> std::result::Result<Arch, String> {
    parse_enum(s)
}
fn parse_norm(s: &str) -> std::result::Result<Norm, String> {
    parse_enum(s)
}
fn parse_activation(s: &str) -> std::result::Result<Activation, String> {
    parse_enum(s)
}
fn parse_schedule(s: &str) -> std::result::Result<ScheduleKind, String> {
    parse_enum(s)
}

impl TrainOverrides {
    /// Read overrides from a TOML file (same names as the flags, `_` for `-`).
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text).map_err(|e| Error::format(path, e.to_string()))
    }

    /// Replace every field of `cfg` that is set here.
    pub fn apply(&self, cfg: &mut TrainConfig) {
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field.clone() { cfg.$field = v; } )* };
        }
        set!(
            tokenizer,
            arch,
            n_layer,
            n_head,
            n_embd,
            block_size,
            dropout,
            norm,
            activation,
            tie_embeddings,
            bias,
            qkv_bias,
            lm_head_bias,
            batch_size,
            val_fraction,
            max_iters,
            lr,
            min_lr,
            schedule,
            warmup_iters,
            grad_accum,
            grad_clip,
            weight_decay,
            beta1,
            beta2,
            eps,
            eval_interval,
            eval_iters,
            checkpoint_interval,
            seed
        );
        if self.lr_decay_iters.is_some() {
            cfg.lr_decay_iters = self.lr_decay_iters;
        }
    }
}

/// The resolved configuration: preset, then TOML file, then flags.
pub fn resolve(
    preset: &str,
    toml: Option<&PathBuf>,
    flags: &TrainOverrides,
) -> Result<TrainConfig> {
    let mut cfg = TrainConfig::preset(preset)?;
    if let Some(path) = toml {
        TrainOverrides::from_toml_file(path)?.apply(&mut cfg);
    }
    flags.apply(&mut cfg);
    cfg.validate()?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_toml_which_overrides_the_preset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        std::fs::write(
            &path,
            "n_layer = 2\nlr = 5e-4\nnorm = \"post\"\nblock = 32\n",
        )
        .unwrap();
        let flags = TrainOverrides {
            lr: Some(2e-4),
            ..Default::default()
        };
        let cfg = resolve("char-cpu", Some(&path), &flags).unwrap();
        assert_eq!(cfg.n_layer, 2);
        assert_eq!(cfg.block_size, 32);
        assert_eq!(cfg.norm, Norm::Post);
        assert_eq!(cfg.lr, 2e-4);
        assert_eq!(cfg.n_embd, 128);
    }

    #[test]
    fn unknown_toml_keys_and_presets_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "n_layers = 2\n").unwrap();
        let err = resolve("char-cpu", Some(&path), &TrainOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("n_layers"), "{err}");
        assert!(
            resolve("huge", None, &TrainOverrides::default())
                .unwrap_err()
                .to_string()
                .contains("char-cpu")
        );
    }

    #[test]
    fn impossible_model_is_rejected() {
        let flags = TrainOverrides {
            n_head: Some(3),
            ..Default::default()
        };
        let err = resolve("char-cpu", None, &flags).unwrap_err().to_string();
        assert!(err.contains("divisible"), "{err}");
    }

    #[test]
    fn every_preset_is_valid() {
        for p in PRESETS {
            TrainConfig::preset(p).unwrap().validate().unwrap();
        }
    }
}
