//! The fine-tune policy and its defaults, in one place: what a fine-tune
//! may change of its parent, and what it starts with when nothing is said.
//!
//! - **Training options** ([`training_config`]): the `finetune` preset
//!   unless another is named, then a TOML file, then the flags; with LoRA
//!   and no learning rate given anywhere, [`LORA_LR`].
//! - **LoRA** ([`lora`]): alpha defaults to twice the rank; no targets means
//!   the parent architecture's ([`LoraTarget::defaults`]).
//! - **The model** ([`model_config`]): the parent's, whole. The context may
//!   shrink (never grow past the parent's positions) and the dropout may
//!   change; every model-shape flag is refused by name
//!   ([`TrainOverrides::shape_flags`]), since the weights are tied to the
//!   shapes and the token ids.
//! - **Conversations on a model without its own chat template**
//!   ([`sft_tokenizer`]): the parent's tokenizer with lmforge's chat tokens
//!   added (their embedding rows start at the mean, see
//!   [`super::start_params`]).

use super::{FineTune, Loaded};
use crate::checkpoint;
use crate::error::{Error, Result};
use crate::model::{LoraConfig, LoraTarget, ModelConfig};
use crate::tokenizer::{Tokenizer, TokenizerSpec};
use crate::train::config::{self, TrainConfig, TrainOverrides};
use crate::train::{FineTuneRequest, Preset};
use std::path::Path;

/// The learning rate of a LoRA fine-tune when none is given (by flag or
/// TOML file): adapters start at zero (`B = 0`) and want a larger step
/// than a full fine-tune's (the `finetune` preset's).
pub const LORA_LR: f32 = 2e-4;

/// LoRA's settings: alpha defaults to `2 x rank`; `None` targets leave the
/// choice to the parent's architecture (resolved in [`model_config`]).
pub fn lora(rank: usize, alpha: Option<f32>, targets: Option<Vec<LoraTarget>>) -> LoraConfig {
    LoraConfig {
        rank,
        alpha: alpha.unwrap_or(2.0 * rank as f32),
        targets: targets.unwrap_or_default(),
    }
}

/// A fine-tune's training options: `preset` (default `finetune`), then the
/// TOML file, then `flags`; with `lora` and no learning rate in the file
/// or the flags, [`LORA_LR`].
pub fn training_config(
    preset: Option<Preset>,
    toml: Option<&Path>,
    flags: &TrainOverrides,
    lora: &Option<LoraConfig>,
    sft: bool,
) -> Result<TrainConfig> {
    let file_lr = match toml {
        Some(path) => TrainOverrides::from_toml_file(path)?.lr,
        None => None,
    };
    let mut flags = flags.clone();
    if lora.is_some() && flags.lr.is_none() && file_lr.is_none() {
        flags.lr = Some(LORA_LR);
    }
    let mut config = config::resolve(preset.unwrap_or(Preset::Finetune), toml, &flags)?;
    config.sft = sft;
    Ok(config)
}

/// The fine-tune's configuration: the parent's model (context and dropout
/// may change) and the requested training options. Checked by the plan.
pub fn model_config(req: &FineTuneRequest, parent: &Loaded) -> Result<TrainConfig> {
    let given = &req.given;
    if let Some(flag) = given.shape_flags().first() {
        return Err(Error::Config(format!(
            "{flag} cannot be used with --init-from: a fine-tune keeps its parent's model and \
             tokenizer ({}), whose weights are tied to their shapes and token ids",
            parent.parent.path.display()
        )));
    }
    let mut config = req.config.clone();
    let parent_block = parent.model.config.block_size;
    let block = match given.block_size {
        Some(b) if b > parent_block => {
            return Err(Error::Config(format!(
                "--block {b} is longer than the parent's context of {parent_block} positions"
            )));
        }
        Some(b) => b,
        None => config.model.block_size.min(parent_block),
    };
    let arch = parent.model.config.arch;
    let lora = req.lora.clone().map(|lora| match lora.targets.is_empty() {
        true => LoraConfig {
            targets: LoraTarget::defaults(arch),
            ..lora
        },
        false => lora,
    });
    config.model = ModelConfig {
        block_size: block,
        dropout: config.model.dropout,
        lora,
        ..parent.model.config.clone()
    };
    config.tokenizer = TokenizerSpec::File(parent.parent.path.join(checkpoint::TOKENIZER_FILE));
    config.finetune = Some(FineTune {
        init_from: parent.parent.clone(),
        freeze_embeddings: req.freeze_embeddings,
        freeze_layers: req.freeze_layers,
    });
    Ok(config)
}

/// The tokenizer conversations need on `parent`: `None` (its own) unless
/// `config.sft` on a model without its own chat template, which gets
/// lmforge's chat tokens added (and the vocabulary grows to hold them).
pub fn sft_tokenizer(
    parent: &Loaded,
    config: &mut TrainConfig,
) -> Result<Option<Box<dyn Tokenizer>>> {
    let own_template = crate::chat::jinja::JinjaTemplate::load(&parent.parent.path)?.is_some();
    if !config.sft || own_template {
        return Ok(None);
    }
    let grown = parent
        .tokenizer
        .with_specials(&crate::chat::template::SPECIAL_TOKENS)
        .map_err(with_bpe_hint)?;
    config.model.vocab_size = config.model.vocab_size.max(grown.vocab_size());
    Ok(Some(grown))
}

/// `err` (a tokenizer that cannot take the chat tokens) with the way to a
/// chatbot: a BPE trained with the chat tokens, pretrained, then `--sft`.
fn with_bpe_hint(err: Error) -> Error {
    let err = match err {
        Error::Config(message) => message,
        other => other.to_string(),
    };
    let specials = crate::chat::template::SPECIAL_TOKENS.join("' --special '");
    Error::Config(format!(
        "{err}. To chat with a model trained from scratch, give it a BPE with the chat tokens: \
         `lmforge tokenizer train --vocab-size 2048 --special '<|endoftext|>' --special '{specials}' \
         --out tok.json TEXT`, pretrain with `lmforge train --tokenizer tok.json --out base`, then \
         `lmforge train --init-from base --sft chats.jsonl --out chatbot` (or start from GPT-2: --tokenizer gpt2)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toml(dir: &Path, text: &str) -> std::path::PathBuf {
        let path = dir.join("c.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn lora_gets_its_learning_rate_unless_one_is_given() {
        let none = TrainOverrides::default();
        let adapters = Some(lora(4, None, None));
        assert_eq!(adapters.as_ref().unwrap().alpha, 8.0);
        let full = training_config(None, None, &none, &None, false).unwrap();
        assert_eq!(full.lr, Preset::Finetune.config().lr);
        let with_lora = training_config(None, None, &none, &adapters, true).unwrap();
        assert_eq!((with_lora.lr, with_lora.sft), (LORA_LR, true));
        let flag = TrainOverrides {
            lr: Some(1e-3),
            ..Default::default()
        };
        assert_eq!(
            training_config(None, None, &flag, &adapters, false)
                .unwrap()
                .lr,
            1e-3
        );
        let dir = tempfile::tempdir().unwrap();
        let file = toml(dir.path(), "lr = 0.005\n");
        let from_file = training_config(None, Some(&file), &none, &adapters, false).unwrap();
        assert_eq!(
            from_file.lr, 0.005,
            "a TOML learning rate is not overridden"
        );
    }
}
