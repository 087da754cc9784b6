//! Fine-tuning: start from a trained model (an lmforge run, a Hugging Face
//! folder, or a model name in the local cache) instead of random weights.
//!
//! - **The parent** ([`Parent`]) is recorded in the run's config with the
//!   SHA-256 of its weight files, so a fine-tune knows exactly what it grew from.
//! - **Starting weights** ([`start_params`]) are the parent's, tensor by
//!   tensor under the same names, adapted to the new model: a vocabulary
//!   grown by special tokens gets new embedding rows set to the mean of the
//!   existing ones (as `transformers`' `resize_token_embeddings` does); a
//!   shorter context keeps the first position rows; LoRA adapters start
//!   with `A` random and `B = 0`, so step 0 is exactly the parent.
//! - **Freezing** ([`trainable_from`]): the frozen parameters are a head of
//!   the flat buffer (embeddings, then the first blocks; every base tensor
//!   under LoRA), see [`crate::model::Grads`].
//! - **LoRA runs** ([`adapters`]) save only their adapters; [`load_run`]
//!   rebuilds the parent and merges them for sampling, chat and export.
//! - **The policy** ([`policy`]): what a fine-tune may change of its parent,
//!   and its defaults (the `finetune` preset, LoRA's learning rate and alpha).

pub mod adapters;
pub mod policy;
pub mod sft;

use crate::checkpoint::{self, weights::TensorFiles};
use crate::error::{Error, Result};
use crate::model::{Model, ParamLayout, TensorSpec};
use crate::rng::Rng;
use crate::tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub use adapters::load_run;

/// The model a fine-tune started from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parent {
    /// As the user named it (`gpt2`, `runs/base`).
    pub name: String,
    /// The folder it resolved to.
    pub path: PathBuf,
    /// SHA-256 of its weight files.
    pub weights_sha256: String,
}

/// The fine-tuning part of a run's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FineTune {
    pub init_from: Parent,
    /// Freeze the token and position embeddings (and a head tied to them).
    #[serde(default)]
    pub freeze_embeddings: bool,
    /// Freeze the embeddings and the first this many blocks.
    #[serde(default)]
    pub freeze_layers: usize,
}

/// Where a parent's weights are read from.
pub enum ParentWeights {
    /// In memory (a LoRA parent, its adapters merged).
    Loaded(Vec<f32>),
    /// Memory-mapped files, read tensor by tensor (so a 6 GB parent is never
    /// held twice while the fine-tune's own weights are built).
    Files(TensorFiles),
}

/// A parent model, opened.
pub struct Loaded {
    pub parent: Parent,
    pub model: Model,
    pub weights: ParentWeights,
    pub tokenizer: Box<dyn Tokenizer>,
}

impl Loaded {
    /// One of the parent's tensors by name: shape and values.
    fn tensor(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        match &self.weights {
            ParentWeights::Files(files) => files.read(name),
            ParentWeights::Loaded(params) => Ok(self
                .model
                .layout
                .get(name)
                .map(|t| (t.shape.clone(), params[t.range.clone()].to_vec()))),
        }
    }
}

/// Load the model `name` names (a run, a Hugging Face folder, a cached
/// model), with the hash of its weights.
pub fn load_parent(name: &str) -> Result<Loaded> {
    let path = crate::hf::cache::resolve(name)?;
    let weights_sha256 = adapters::weights_hash(&path)?;
    let (model, weights) = match path.join(adapters::ADAPTER_CONFIG_FILE).exists() {
        true => {
            let (model, params) = load_run(&path)?;
            (model, ParentWeights::Loaded(params))
        }
        false => {
            let config = checkpoint::load_config(&path)?;
            checkpoint::weights::check_size(&path, &config)?;
            let files = TensorFiles::open(&path)?;
            (Model::new(config)?, ParentWeights::Files(files))
        }
    };
    let tokenizer = crate::hf::read_tokenizer(&path)?;
    let parent = Parent {
        name: name.to_string(),
        path: std::fs::canonicalize(&path).unwrap_or(path),
        weights_sha256,
    };
    Ok(Loaded {
        parent,
        model,
        weights,
        tokenizer,
    })
}

/// Load the parent a fine-tune recorded, refusing one whose weights changed.
pub fn reload_parent(recorded: &Parent) -> Result<Loaded> {
    if !recorded.path.exists() {
        return Err(Error::Data(format!(
            "this fine-tune's parent model {} (recorded as '{}') is gone: it was moved or \
             deleted. Put it back at that path (a LoRA run keeps only its adapters), or \
             train a new fine-tune from where the parent is now",
            recorded.path.display(),
            recorded.name
        )));
    }
    let loaded = load_parent(&recorded.path.to_string_lossy())?;
    if loaded.parent.weights_sha256 != recorded.weights_sha256 {
        return Err(Error::Data(format!(
            "{}: the parent model's weights changed since this fine-tune started \
             (SHA-256 {} then, {} now); restore them or start a new fine-tune",
            recorded.path.display(),
            recorded.weights_sha256,
            loaded.parent.weights_sha256
        )));
    }
    Ok(loaded)
}

/// The first trained parameter (those before it are frozen).
pub fn trainable_from(ft: Option<&FineTune>, layout: &ParamLayout, lora: bool) -> Result<usize> {
    if lora {
        return Ok(layout.base_total);
    }
    let Some(ft) = ft else { return Ok(0) };
    let blocks = &layout.blocks;
    if ft.freeze_layers >= blocks.len() && ft.freeze_layers > 0 {
        return Err(Error::Config(format!(
            "--freeze-layers {} freezes every block of a {}-block model; freeze fewer",
            ft.freeze_layers,
            blocks.len()
        )));
    }
    Ok(match (ft.freeze_layers, ft.freeze_embeddings) {
        (0, false) => 0,
        (n, _) => blocks[n].start(),
    })
}

/// Copy `src` rows of `width` into `dst`, filling extra rows with their mean (`mean_fill`) or zeros.
fn transplant_rows(dst: &mut [f32], src: &[f32], width: usize, mean_fill: bool) {
    let kept = dst.len().min(src.len());
    dst[..kept].copy_from_slice(&src[..kept]);
    if dst.len() <= kept {
        return;
    }
    let rows = (src.len() / width).max(1);
    let mut mean = vec![0.0f64; width];
    if mean_fill {
        for row in src.chunks_exact(width) {
            mean.iter_mut()
                .zip(row)
                .for_each(|(m, &x)| *m += x as f64 / rows as f64);
        }
    }
    for row in dst[kept..].chunks_exact_mut(width) {
        row.iter_mut().zip(&mean).for_each(|(d, &m)| *d = m as f32);
    }
}

/// LoRA's starting adapters: `A` uniform in `±1/sqrt(IN)` (PEFT's Kaiming
/// default), `B` zero.
fn init_adapter(spec: &TensorSpec, dst: &mut [f32], seed: u64, index: usize) {
    if spec.name.ends_with("lora_B.weight") {
        return dst.fill(0.0);
    }
    let bound = 1.0 / (spec.shape[1] as f32).sqrt();
    let mut rng = Rng::new(seed, 7000 + index as u64);
    dst.iter_mut()
        .for_each(|x| *x = (rng.next_f32() * 2.0 - 1.0) * bound);
}

/// `model`'s starting weights from the parent's (see the module doc),
/// read one tensor at a time.
pub fn start_params(parent: &Loaded, model: &Model, seed: u64) -> Result<Vec<f32>> {
    let mut params = vec![0.0f32; model.num_params()];
    crate::huge_pages::advise(&params);
    for (i, spec) in model.layout.tensors.iter().enumerate() {
        let dst = &mut params[spec.range.clone()];
        if spec.name.contains(".lora_") {
            init_adapter(spec, dst, seed, i);
            continue;
        }
        let missing = || Error::Config(format!("the parent model has no tensor {:?}", spec.name));
        let (shape, src) = parent.tensor(&spec.name)?.ok_or_else(missing)?;
        if shape.len() != spec.shape.len() || shape[1..] != spec.shape[1..] {
            return Err(Error::Config(format!(
                "tensor {:?} is {shape:?} in the parent, {:?} here: only the vocabulary and the context can change",
                spec.name, spec.shape
            )));
        }
        let width = spec.shape[1..].iter().product::<usize>().max(1);
        transplant_rows(dst, &src, width, spec.shape.len() > 1);
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grown_rows_take_the_mean_and_cropped_rows_the_head() {
        let src = [1.0, 2.0, 3.0, 6.0];
        let mut grown = [0.0f32; 6];
        transplant_rows(&mut grown, &src, 2, true);
        assert_eq!(grown, [1.0, 2.0, 3.0, 6.0, 2.0, 4.0]);
        let mut cropped = [0.0f32; 2];
        transplant_rows(&mut cropped, &src, 2, true);
        assert_eq!(cropped, [1.0, 2.0]);
        let mut bias = [9.0f32; 3];
        transplant_rows(&mut bias, &[1.0, 2.0], 1, false);
        assert_eq!(bias, [1.0, 2.0, 0.0]);
    }
}
