//! A LoRA run's files, and turning them back into a plain model.
//!
//! | file | contents |
//! |---|---|
//! | `adapter_model.safetensors` | the adapters, PEFT's names: `base_model.model.transformer.h.{l}.{m}.lora_A.weight` `(r, IN)`, `...lora_B.weight` `(OUT, r)` (a Llama's: `base_model.model.model.layers.{l}.self_attn.q_proj.lora_A.weight`, ...) |
//! | `adapter_config.json` | PEFT's `LoraConfig` (`r`, `lora_alpha`, `target_modules`; `fan_in_fan_out` true for GPT-2's `Conv1D`, false for a Llama's `nn.Linear`) |
//! | `config.json` | the adapted model's config (with `"lora"` under `"lmforge"`) |
//!
//! The base weights are not copied: they are the parent's, which the run's
//! `train_config.json` names with their SHA-256. [`load_run`] reloads the
//! parent, checks the hash, rebuilds the starting weights as training did,
//! puts the adapters in and merges them (`W += ΔW`, see [`crate::model::lora`]), giving an ordinary
//! model for `sample`, `chat`, `export-hf` and `merge-lora`.

use super::FineTune;
use crate::backend::cpu::Cpu;
use crate::checkpoint::{self, weights};
use crate::error::{Error, Result};
use crate::fsutil::write_atomic_bytes;
use crate::model::{Model, ModelConfig, WeightLayout};
use safetensors::SafeTensors;
use safetensors::tensor::{Dtype, TensorView};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;

pub const ADAPTER_FILE: &str = "adapter_model.safetensors";
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";
const PEFT_PREFIX: &str = "base_model.model.";

/// SHA-256 of a model's weight files (a LoRA run's: its adapters), in hex.
pub fn weights_hash(dir: &Path) -> Result<String> {
    let adapters = dir.join(ADAPTER_FILE);
    let files = match adapters.exists() {
        true => vec![adapters],
        false => weights::weight_files(dir)?,
    };
    let mut hasher = Sha256::new();
    for path in files {
        let mut file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        std::io::copy(&mut file, &mut hasher).map_err(|e| Error::io(&path, e))?;
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Write a LoRA model's adapters and configs into `dir`.
pub fn save_adapters(
    dir: &Path,
    model: &Model,
    params: &[f32],
    parent: &Path,
    eot_token: Option<u32>,
) -> Result<()> {
    let lora = model.config.lora.as_ref().expect("a LoRA model");
    let adapters: Vec<_> = model
        .layout
        .tensors
        .iter()
        .filter(|t| t.range.start >= model.layout.base_total)
        .collect();
    let bytes: Vec<Vec<u8>> = adapters
        .iter()
        .map(|t| {
            params[t.range.clone()]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        })
        .collect();
    let views: Vec<(String, TensorView)> = adapters
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            let view = TensorView::new(Dtype::F32, t.shape.clone(), b).expect("sizes match");
            (format!("{PEFT_PREFIX}{}", t.name), view)
        })
        .collect();
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    let path = dir.join(ADAPTER_FILE);
    let file = safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::format(&path, e.to_string()))?;
    write_atomic_bytes(&path, &file)?;
    // PEFT's flag for weights stored `(IN, OUT)` (GPT-2's `Conv1D`).
    let conv1d = model.config.family().recipe.map(|r| r.linear) == Some(WeightLayout::InOut);
    let config = serde_json::json!({
        "peft_type": "LORA", "task_type": "CAUSAL_LM",
        "base_model_name_or_path": parent,
        "r": lora.rank, "lora_alpha": lora.alpha, "lora_dropout": 0.0, "bias": "none",
        "target_modules": lora.targets,
        "fan_in_fan_out": conv1d,
    });
    let json = serde_json::to_vec_pretty(&config).expect("JSON serialises");
    write_atomic_bytes(&dir.join(ADAPTER_CONFIG_FILE), &json)?;
    checkpoint::save_config(dir, &model.config, eot_token)
}

/// Read the adapters of `dir` into their ranges of `params`.
fn read_adapters(dir: &Path, model: &Model, params: &mut [f32]) -> Result<()> {
    let path = dir.join(ADAPTER_FILE);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::format(&path, format!("not a valid safetensors file: {e}")))?;
    for t in model
        .layout
        .tensors
        .iter()
        .filter(|t| t.name.contains(".lora_"))
    {
        let name = format!("{PEFT_PREFIX}{}", t.name);
        let values = checkpoint::read_f32(&st, &name, t.range.len(), &path)?;
        params[t.range.clone()].copy_from_slice(&values);
    }
    Ok(())
}

/// `W += ΔW` for every adapter; returns the plain model and its weights.
pub fn merge(model: &Model, mut params: Vec<f32>) -> Result<(Model, Vec<f32>)> {
    let be = Cpu::new();
    for block in &model.layout.blocks {
        for linear in [
            &block.c_attn,
            &block.attn_proj,
            &block.c_fc,
            &block.mlp_proj,
        ] {
            for lora in &linear.lora {
                let scaled_b: Vec<f32> = params[lora.b.clone()]
                    .iter()
                    .map(|x| x * lora.scale)
                    .collect();
                let a = params[lora.a.clone()].to_vec();
                let at = linear.weight.start;
                let shape = (linear.fan_in, linear.fan_out);
                lora.add_delta(&be, &mut params, at, (&a, &scaled_b), linear.layout, shape);
            }
        }
    }
    let plain = Model::new(ModelConfig {
        lora: None,
        ..model.config.clone()
    })?;
    params.truncate(plain.num_params());
    Ok((plain, params))
}

/// The fine-tune record of the run in `dir`, from its `train_config.json`.
fn recorded_finetune(dir: &Path) -> Result<FineTune> {
    let path = dir.join(checkpoint::TRAIN_CONFIG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::format(&path, e.to_string()))?;
    serde_json::from_value(json["config"]["finetune"].clone()).map_err(|e| {
        Error::format(
            &path,
            format!("a LoRA run must record its parent under config.finetune: {e}"),
        )
    })
}

/// Write the LoRA run `run` into the folder `out` as an ordinary run
/// (`lmforge merge-lora`): the merged `model.safetensors` and its
/// `config.json`, the tokenizer and the chat files.
pub fn write_merged(run: &Path, out: &Path) -> Result<()> {
    if !run.join(ADAPTER_FILE).exists() {
        return Err(Error::format(
            run,
            format!("not a LoRA run (no {ADAPTER_FILE})"),
        ));
    }
    let (model, params) = load_run(run)?;
    let tokenizer = crate::tokenizer::load(&run.join(checkpoint::TOKENIZER_FILE))?;
    checkpoint::save_model(out, &model, &params, tokenizer.eot_token())?;
    tokenizer.save(&out.join(checkpoint::TOKENIZER_FILE))?;
    crate::chat::jinja::sync_chat_files(Some(run), out)
}

/// The model of a run directory, LoRA adapters merged (see the module doc),
/// or any folder [`checkpoint::load_model`] reads.
pub fn load_run(dir: &Path) -> Result<(Model, Vec<f32>)> {
    if !dir.join(ADAPTER_CONFIG_FILE).exists() {
        return checkpoint::load_model(dir);
    }
    let model = Model::new(checkpoint::load_config(dir)?)?;
    if model.config.lora.is_none() {
        return Err(Error::format(
            dir.join(checkpoint::CONFIG_FILE),
            "has no \"lora\" settings, but the run has adapters",
        ));
    }
    let parent = super::reload_parent(&recorded_finetune(dir)?.init_from)?;
    let mut params = super::start_params(&parent, &model, 0)?;
    read_adapters(dir, &model, &mut params)?;
    merge(&model, params)
}
