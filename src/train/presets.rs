//! The built-in presets: one enum, one function per preset, each a change
//! of `char_cpu`, nanoGPT's Shakespeare-char settings. The README's preset
//! table says where each comes from.

use super::config::TrainConfig;
use crate::model::{Activation, Arch, LlamaConfig, ModelConfig, Norm, RopeScaling};
use crate::optim::ScheduleKind;
use crate::tokenizer::TokenizerSpec;
use serde::{Deserialize, Serialize};

/// A named starting configuration (`--preset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// The course's bigram table: block 8, batch 32, lr 1e-2, 3000 iterations.
    Bigram,
    /// The course's GPT notebook: 1 layer, 8 heads, 128 dims, post-norm, ReLU, dropout 0.2.
    Course,
    /// nanoGPT's CPU Shakespeare config: 4 layers, 4 heads, 128 dims, block 64 (the default).
    CharCpu,
    /// nanoGPT's shakespeare_char: 6 layers, 6 heads, 384 dims, block 256, dropout 0.2.
    CharBaby,
    /// GPT-2 124M with the GPT-2 tokenizer, nanoGPT's train_gpt2 settings.
    Gpt2,
    /// char-cpu's size as a Llama: 4 layers, 4 query heads over 2 key/value
    /// heads, 128 dims, SwiGLU 352 wide, rope_theta 10000, block 64.
    LlamaChar,
    /// SmolLM2-135M's shape (30 layers, 9 heads over 3 key/value heads, 576
    /// dims, SwiGLU 1536, rope_theta 100000, block 2048, tied) with the
    /// GPT-2 tokenizer (SmolLM's own cannot be downloaded here), lr 3e-3.
    #[value(name = "smollm-135m")]
    #[serde(rename = "smollm-135m")]
    Smollm135m,
    /// Fine-tuning (the default with --init-from): the parent's model, block
    /// up to 256, batch 4, lr 5e-5 (2e-4 with LoRA), 500 iterations, no dropout.
    Finetune,
}

impl Preset {
    /// The configuration this preset starts from.
    pub fn config(self) -> TrainConfig {
        let config = match self {
            Preset::Bigram => bigram(),
            Preset::Course => course(),
            Preset::CharCpu => char_cpu(),
            Preset::CharBaby => char_baby(),
            Preset::Gpt2 => gpt2(),
            Preset::LlamaChar => llama_char(),
            Preset::Smollm135m => smollm_135m(),
            Preset::Finetune => finetune(),
        };
        TrainConfig {
            preset: self,
            ..config
        }
    }
}

/// The name `--preset` takes (and `train_config.json` stores).
impl std::fmt::Display for Preset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use clap::ValueEnum;
        let value = self.to_possible_value().expect("no preset is hidden");
        f.write_str(value.get_name())
    }
}

/// nanoGPT's Shakespeare-char settings on a CPU, the base of every preset.
fn char_cpu() -> TrainConfig {
    TrainConfig {
        preset: Preset::CharCpu,
        tokenizer: TokenizerSpec::Char,
        model: ModelConfig {
            arch: Arch::Gpt,
            vocab_size: 0,
            block_size: 64,
            n_layer: 4,
            n_head: 4,
            n_embd: 128,
            dropout: 0.0,
            norm: Norm::Pre,
            activation: Activation::Gelu,
            tie_embeddings: true,
            bias: false,
            qkv_bias: false,
            lm_head_bias: false,
            llama: None,
            lora: None,
        },
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
        finetune: None,
        sft: false,
    }
}

fn char_baby() -> TrainConfig {
    let base = char_cpu();
    TrainConfig {
        model: ModelConfig {
            n_layer: 6,
            n_head: 6,
            n_embd: 384,
            block_size: 256,
            dropout: 0.2,
            ..base.model
        },
        batch_size: 64,
        max_iters: 5000,
        eval_iters: 200,
        ..base
    }
}

/// The course notebooks: plain `torch.optim.AdamW` defaults, constant lr, no clipping.
fn course() -> TrainConfig {
    let base = char_cpu();
    TrainConfig {
        model: ModelConfig {
            n_layer: 1,
            n_head: 8,
            n_embd: 128,
            block_size: 32,
            dropout: 0.2,
            norm: Norm::Post,
            activation: Activation::Relu,
            tie_embeddings: false,
            bias: true,
            qkv_bias: false,
            lm_head_bias: true,
            lora: None,
            ..base.model
        },
        batch_size: 8,
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
        ..base
    }
}

/// The course's bigram notebook, trained long enough to converge.
fn bigram() -> TrainConfig {
    let base = course();
    TrainConfig {
        model: ModelConfig {
            arch: Arch::Bigram,
            block_size: 8,
            dropout: 0.0,
            ..base.model
        },
        batch_size: 32,
        lr: 1e-2,
        min_lr: 1e-2,
        eval_interval: 300,
        eval_iters: 200,
        checkpoint_interval: 1000,
        ..base
    }
}

/// GPT-2 124M (nanoGPT's `train_gpt2` settings, one process).
fn gpt2() -> TrainConfig {
    let base = char_cpu();
    TrainConfig {
        tokenizer: TokenizerSpec::Gpt2,
        model: ModelConfig {
            n_layer: 12,
            n_head: 12,
            n_embd: 768,
            block_size: 1024,
            bias: true,
            qkv_bias: true,
            ..base.model
        },
        batch_size: 12,
        grad_accum: 40,
        max_iters: 600_000,
        lr: 6e-4,
        min_lr: 6e-5,
        warmup_iters: 2000,
        beta2: 0.95,
        eval_interval: 1000,
        eval_iters: 200,
        checkpoint_interval: 1000,
        ..base
    }
}

/// char-cpu as a Llama-family model of the same size.
fn llama_char() -> TrainConfig {
    let base = char_cpu();
    let mut model = ModelConfig {
        arch: Arch::Llama,
        ..base.model
    };
    model.match_arch(true);
    if let Some(llama) = &mut model.llama {
        llama.n_kv_head = 2;
    }
    TrainConfig { model, ..base }
}

/// SmolLM2-135M's shape (its config.json), trained as nanoGPT trains GPT-2.
fn smollm_135m() -> TrainConfig {
    let base = gpt2();
    let model = ModelConfig {
        arch: Arch::Llama,
        block_size: 2048,
        n_layer: 30,
        n_head: 9,
        n_embd: 576,
        activation: Activation::Silu,
        bias: false,
        qkv_bias: false,
        tie_embeddings: true,
        llama: Some(LlamaConfig {
            n_kv_head: 3,
            intermediate_size: 1536,
            rope_theta: 100_000.0,
            rope_scaling: RopeScaling::None,
            rms_norm_eps: 1e-5,
        }),
        ..base.model
    };
    TrainConfig {
        model,
        batch_size: 4,
        lr: 3e-3,
        min_lr: 3e-4,
        ..base
    }
}

/// Fine-tuning a pretrained model on a small data set (the model fields are
/// replaced by the parent's; the block is capped at 256 unless `--block` says).
fn finetune() -> TrainConfig {
    let base = char_cpu();
    TrainConfig {
        preset: Preset::Finetune,
        model: ModelConfig {
            block_size: 256,
            dropout: 0.0,
            ..base.model
        },
        batch_size: 4,
        val_fraction: 0.1,
        max_iters: 500,
        lr: 5e-5,
        min_lr: 5e-6,
        warmup_iters: 20,
        grad_clip: 1.0,
        weight_decay: 0.0,
        eval_interval: 50,
        eval_iters: 20,
        checkpoint_interval: 100,
        ..base
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn every_preset_is_valid_and_knows_its_name() {
        for &preset in Preset::value_variants() {
            let config = preset.config();
            assert_eq!(config.preset, preset);
            config.validate().unwrap();
            let name = preset.to_string();
            let json = serde_json::to_value(preset).unwrap();
            assert_eq!(json, name, "serde and clap spell {preset:?} alike");
        }
    }

    #[test]
    fn gpt2_is_gpt2_124m() {
        let c = Preset::Gpt2.config();
        assert_eq!(
            (c.model.n_layer, c.model.n_embd, c.model.block_size),
            (12, 768, 1024)
        );
        assert_eq!(c.tokenizer, TokenizerSpec::Gpt2);
    }
}
