//! Training configuration: the model's config and every training setting in
//! one struct, filled from a preset ([`Preset`]), then a TOML file
//! (`--config`), then command-line flags, each overriding the one before
//! ([`TrainOverrides`]).

use super::presets::Preset;
use crate::error::{Error, Result};
use crate::finetune::FineTune;
use crate::model::{Activation, Arch, LlamaConfig, ModelConfig, Norm};
use crate::optim::{AdamWConfig, LrSchedule, ScheduleKind};
use crate::tokenizer::TokenizerSpec;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Everything a training run needs to know, saved in the run's
/// `train_config.json` (flat: the model's fields sit beside the others).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub preset: Preset,
    #[serde(default = "default_tokenizer")]
    pub tokenizer: TokenizerSpec,
    /// The model. Its `vocab_size` is the tokenizer's, set when training
    /// starts (0 in presets).
    #[serde(flatten)]
    pub model: ModelConfig,
    // Data.
    pub batch_size: usize,
    /// Fraction of the text (its tail) held out for validation.
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
    /// Set when the run fine-tunes a parent model (`--init-from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finetune: Option<FineTune>,
    /// The data is conversations (`--sft`): the loss counts the assistant's tokens only.
    #[serde(default)]
    pub sft: bool,
}

fn default_tokenizer() -> TokenizerSpec {
    TokenizerSpec::Char
}

/// Where a float setting must lie: finite, above `lo` (or at least `lo`
/// when `lo_included`) and below `hi`.
struct Interval {
    lo: f64,
    lo_included: bool,
    hi: f64,
}

const POSITIVE: Interval = Interval {
    lo: 0.0,
    lo_included: false,
    hi: f64::INFINITY,
};
const NON_NEGATIVE: Interval = Interval {
    lo: 0.0,
    lo_included: true,
    hi: f64::INFINITY,
};
/// `[0, 1)`: a probability that is not certain, a decay rate.
const FRACTION: Interval = Interval {
    lo: 0.0,
    lo_included: true,
    hi: 1.0,
};
/// `(0, 1)`.
const PROPER_FRACTION: Interval = Interval {
    lo: 0.0,
    lo_included: false,
    hi: 1.0,
};

/// Check a float setting, naming its flag in the error.
fn check_float<F: Into<f64> + std::fmt::Display + Copy>(
    name: &str,
    shown: F,
    i: Interval,
) -> Result<()> {
    let value: f64 = shown.into();
    let above = value > i.lo || (i.lo_included && value == i.lo);
    if value.is_finite() && above && value < i.hi {
        return Ok(());
    }
    let lo = if i.lo_included { "at least" } else { "above" };
    let hi = if i.hi.is_finite() {
        format!(" and below {}", i.hi)
    } else {
        String::new()
    };
    Err(Error::Config(format!(
        "--{} must be a finite number {lo} {}{hi}, got {shown}",
        name.replace('_', "-"),
        i.lo
    )))
}

impl TrainConfig {
    /// The learning rate at every iteration.
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

    /// Reject settings training cannot run with, naming the flag.
    pub fn validate(&self) -> Result<()> {
        let floats = [
            ("lr", self.lr, POSITIVE),
            ("min_lr", self.min_lr, NON_NEGATIVE),
            ("grad_clip", self.grad_clip, NON_NEGATIVE),
            ("weight_decay", self.weight_decay, NON_NEGATIVE),
            ("beta1", self.beta1, FRACTION),
            ("beta2", self.beta2, FRACTION),
            ("eps", self.eps, POSITIVE),
            ("dropout", self.model.dropout, FRACTION),
        ];
        for (name, value, interval) in floats {
            check_float(name, value, interval)?;
        }
        check_float("val_fraction", self.val_fraction, PROPER_FRACTION)?;
        let counts = [
            ("batch", self.batch_size as u64),
            ("grad_accum", self.grad_accum as u64),
            ("max_iters", self.max_iters),
            ("eval_interval", self.eval_interval),
            ("eval_iters", self.eval_iters),
            ("checkpoint_interval", self.checkpoint_interval),
        ];
        if let Some((name, _)) = counts.iter().find(|(_, value)| *value == 0) {
            return Err(Error::Config(format!(
                "--{} must be at least 1",
                name.replace('_', "-")
            )));
        }
        ModelConfig {
            vocab_size: self.model.vocab_size.max(1),
            ..self.model.clone()
        }
        .validate()
    }
}

/// Optional overrides, from a TOML file or from flags; each `Some` replaces
/// the preset's value. Field names are the flag names with `_` for `-`.
#[derive(Debug, Clone, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct TrainOverrides {
    /// Tokenizer: "char" (the vocabulary is the training text's characters),
    /// "gpt2" (GPT-2's byte-level BPE), or a tokenizer.json path.
    #[arg(long)]
    pub tokenizer: Option<TokenizerSpec>,
    /// Model: "bigram", "gpt" or "llama" (RMS norms, rotary positions,
    /// grouped-query attention, SwiGLU; a preset's GPT shape becomes a Llama
    /// of the same size).
    #[arg(long, value_parser = parse_enum::<Arch>)]
    pub arch: Option<Arch>,
    /// Llama: key/value heads, shared by groups of query heads (must divide --n-head).
    #[arg(long)]
    pub n_kv_head: Option<usize>,
    /// Llama: the SwiGLU feed-forward's hidden width (default about 8/3 x n_embd).
    #[arg(long)]
    pub intermediate_size: Option<usize>,
    /// Llama: the rotary embeddings' base.
    #[arg(long)]
    pub rope_theta: Option<f32>,
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
    #[arg(long, value_parser = parse_enum::<Norm>)]
    pub norm: Option<Norm>,
    /// Feed-forward activation: "gelu" (tanh approximation), "relu" or "silu".
    #[arg(long, value_parser = parse_enum::<Activation>)]
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
    #[arg(long, value_parser = parse_enum::<ScheduleKind>)]
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

/// A lowercase enum value, by its serde name.
fn parse_enum<T: serde::de::DeserializeOwned>(s: &str) -> std::result::Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_lowercase()))
        .map_err(|_| format!("invalid value {s:?}"))
}

/// `*dst = value` when an override gives one.
fn set<T>(dst: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *dst = value;
    }
}

/// The Llama-only overrides (`--n-kv-head`, `--intermediate-size`,
/// `--rope-theta`). Outside arch llama they stay for `validate` to refuse, naming them.
fn set_llama(m: &mut ModelConfig, given: (Option<usize>, Option<usize>, Option<f32>)) {
    let (n_kv_head, intermediate_size, rope_theta) = given;
    if n_kv_head.is_none() && intermediate_size.is_none() && rope_theta.is_none() {
        return;
    }
    let l = m
        .llama
        .get_or_insert_with(|| LlamaConfig::for_shape(m.n_embd, m.n_head));
    set(&mut l.n_kv_head, n_kv_head);
    set(&mut l.intermediate_size, intermediate_size);
    set(&mut l.rope_theta, rope_theta);
}

impl TrainOverrides {
    /// Read overrides from a TOML file (same names as the flags, `_` for `-`).
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text).map_err(|e| Error::format(path, e.to_string()))
    }

    /// Replace every setting of `cfg` given here. Every field is named, with
    /// no `..`: a new override that is not applied does not compile.
    pub fn apply(&self, cfg: &mut TrainConfig) {
        let TrainOverrides {
            tokenizer,
            arch,
            n_kv_head,
            intermediate_size,
            rope_theta,
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
            lr_decay_iters,
            grad_accum,
            grad_clip,
            weight_decay,
            beta1,
            beta2,
            eps,
            eval_interval,
            eval_iters,
            checkpoint_interval,
            seed,
        } = self.clone();
        set(&mut cfg.tokenizer, tokenizer);
        let m = &mut cfg.model;
        set(&mut m.arch, arch);
        set(&mut m.n_layer, n_layer);
        set(&mut m.n_head, n_head);
        set(&mut m.n_embd, n_embd);
        set(&mut m.block_size, block_size);
        set(&mut m.dropout, dropout);
        set(&mut m.norm, norm);
        set(&mut m.activation, activation);
        set(&mut m.tie_embeddings, tie_embeddings);
        set(&mut m.bias, bias);
        set(&mut m.qkv_bias, qkv_bias);
        set(&mut m.lm_head_bias, lm_head_bias);
        if arch.is_some() {
            m.match_arch(activation.is_none());
        }
        set_llama(m, (n_kv_head, intermediate_size, rope_theta));
        set(&mut cfg.batch_size, batch_size);
        set(&mut cfg.val_fraction, val_fraction);
        set(&mut cfg.max_iters, max_iters);
        set(&mut cfg.lr, lr);
        set(&mut cfg.min_lr, min_lr);
        set(&mut cfg.schedule, schedule);
        set(&mut cfg.warmup_iters, warmup_iters);
        set(&mut cfg.lr_decay_iters, lr_decay_iters.map(Some));
        set(&mut cfg.grad_accum, grad_accum);
        set(&mut cfg.grad_clip, grad_clip);
        set(&mut cfg.weight_decay, weight_decay);
        set(&mut cfg.beta1, beta1);
        set(&mut cfg.beta2, beta2);
        set(&mut cfg.eps, eps);
        set(&mut cfg.eval_interval, eval_interval);
        set(&mut cfg.eval_iters, eval_iters);
        set(&mut cfg.checkpoint_interval, checkpoint_interval);
        set(&mut cfg.seed, seed);
    }
}

/// The flags of `$o`'s `$shape` fields that are given, as `--field-name`.
/// The pattern names every field of [`TrainOverrides`] with no `..`, so a
/// new override that is not sorted into model shape or training here does
/// not compile.
macro_rules! given_shape_flags {
    ($o:expr; shape: $($shape:ident),*; training: $($training:ident),*) => {{
        let TrainOverrides { $($shape,)* $($training: _,)* } = $o;
        let flags = [$((stringify!($shape), $shape.is_some())),*];
        flags
            .into_iter()
            .filter(|(_, given)| *given)
            .map(|(name, _)| format!("--{}", name.replace('_', "-")))
            .collect()
    }};
}

impl TrainOverrides {
    /// The model-shape flags given (`--n-layer`, `--tokenizer`, ...): what
    /// a fine-tune cannot change, as its weights are tied to them. The
    /// context (`--block`) and `--dropout` are training options here.
    pub fn shape_flags(&self) -> Vec<String> {
        given_shape_flags!(self;
            shape: tokenizer, arch, n_layer, n_head, n_embd, norm, activation,
                tie_embeddings, bias, qkv_bias, lm_head_bias, n_kv_head, intermediate_size,
                rope_theta;
            training: block_size, dropout, batch_size, val_fraction, max_iters, lr, min_lr,
                schedule, warmup_iters, lr_decay_iters, grad_accum, grad_clip, weight_decay,
                beta1, beta2, eps, eval_interval, eval_iters, checkpoint_interval, seed)
    }
}

/// The resolved configuration: preset, then TOML file, then flags.
pub fn resolve(preset: Preset, toml: Option<&Path>, flags: &TrainOverrides) -> Result<TrainConfig> {
    let mut cfg = preset.config();
    if let Some(path) = toml {
        TrainOverrides::from_toml_file(path)?.apply(&mut cfg);
    }
    flags.apply(&mut cfg);
    cfg.validate().map_err(|e| match toml {
        // The bad value may come from the file: say which file.
        Some(path) => Error::format(
            path,
            format!("{e} (with this file's settings and the flags)"),
        ),
        None => e,
    })?;
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
            "n_layer = 2\nlr = 5e-4\nnorm = \"post\"\nblock = 32\ntokenizer = \"gpt2\"\n",
        )
        .unwrap();
        let flags = TrainOverrides {
            lr: Some(2e-4),
            ..Default::default()
        };
        let cfg = resolve(Preset::CharCpu, Some(&path), &flags).unwrap();
        assert_eq!(cfg.model.n_layer, 2);
        assert_eq!(cfg.model.block_size, 32);
        assert_eq!(cfg.model.norm, Norm::Post);
        assert_eq!(cfg.lr, 2e-4);
        assert_eq!(cfg.model.n_embd, 128);
        assert_eq!(cfg.tokenizer, TokenizerSpec::Gpt2);
    }

    #[test]
    fn unknown_toml_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "n_layers = 2\n").unwrap();
        let err = resolve(Preset::CharCpu, Some(&path), &TrainOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("n_layers"), "{err}");
    }

    #[test]
    fn impossible_model_is_rejected() {
        let flags = TrainOverrides {
            n_head: Some(3),
            ..Default::default()
        };
        let err = resolve(Preset::CharCpu, None, &flags)
            .unwrap_err()
            .to_string();
        assert!(err.contains("divisible"), "{err}");
    }

    /// NaN, infinities and out-of-range floats are refused with the flag's name.
    #[test]
    fn floats_must_be_finite_and_in_range() {
        type Case = (&'static str, fn(&mut TrainOverrides));
        let cases: [Case; 6] = [
            ("--weight-decay", |o| o.weight_decay = Some(f32::NAN)),
            ("--lr", |o| o.lr = Some(f32::INFINITY)),
            ("--lr", |o| o.lr = Some(0.0)),
            ("--beta2", |o| o.beta2 = Some(1.0)),
            ("--dropout", |o| o.dropout = Some(f32::NAN)),
            ("--val-fraction", |o| o.val_fraction = Some(f64::NAN)),
        ];
        for (flag, make) in cases {
            let mut flags = TrainOverrides::default();
            make(&mut flags);
            let err = resolve(Preset::CharCpu, None, &flags)
                .unwrap_err()
                .to_string();
            assert!(err.contains(flag), "{flag}: {err}");
        }
        let zero_batch = TrainOverrides {
            batch_size: Some(0),
            ..Default::default()
        };
        let err = resolve(Preset::CharCpu, None, &zero_batch)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--batch"), "{err}");
    }

    /// A run's config survives `train_config.json` unchanged, and the
    /// model's fields sit at the top level (as in files of earlier versions).
    #[test]
    fn config_round_trips_through_flat_json() {
        let mut cfg = Preset::Course.config();
        cfg.model.vocab_size = 65;
        cfg.lr_decay_iters = Some(7);
        let json = serde_json::to_value(&cfg).unwrap();
        assert_eq!(json["n_layer"], 1);
        assert_eq!(json["preset"], "course");
        assert_eq!(serde_json::from_value::<TrainConfig>(json).unwrap(), cfg);
    }
}
