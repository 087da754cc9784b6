//! Checkpoints: the files a run directory holds.
//!
//! | file | contents |
//! |---|---|
//! | `model.safetensors` | parameters under Hugging Face names (GPT-2's or a Llama's, see [`crate::model::family`]) |
//! | `config.json` | a `transformers` GPT-2 (or Llama / Qwen2, see [`hf_llama`]) config, plus the exact lmforge model config under `"lmforge"` |
//! | `tokenizer.json` | the tokenizer, Hugging Face format |
//! | `train_config.json` | the resolved training configuration (for `--resume`) |
//! | `train_state.safetensors` | parameters, AdamW moments, step and elapsed time: everything `--resume` needs, in one file |
//!
//! Every file is written atomically (temporary file, then rename), so an
//! interrupted save leaves the previous checkpoint intact. Resuming reads the
//! single `train_state` file, so it can never mix two checkpoints.
//!
//! Biases a model does not have (e.g. `bias = false`, as nanoGPT) are written
//! as zeros, so `transformers.GPT2LMHeadModel.from_pretrained(run_dir)` loads
//! pre-norm GELU models exactly; lmforge ignores them when loading.
//!
//! Each safetensors file carries a checksum, verified at load, and only
//! finite values are ever written or loaded ([`integrity`]).

pub mod hf_llama;
pub mod integrity;

use crate::error::{Error, Result};
use crate::fsutil::write_atomic_bytes;
use crate::model::{Activation, Arch, Model, ModelConfig, Norm};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;

pub mod weights;

pub const MODEL_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const TRAIN_CONFIG_FILE: &str = "train_config.json";
pub const STATE_FILE: &str = "train_state.safetensors";

const STATE_MAGIC: &str = "lmforge-train-state";
const STATE_VERSION: &str = "1";

fn to_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn view<'a>(bytes: &'a [u8], shape: &[usize]) -> TensorView<'a> {
    TensorView::new(Dtype::F32, shape.to_vec(), bytes).expect("shape matches the byte count")
}

fn serialize(
    tensors: Vec<(String, Vec<u8>, Vec<usize>)>,
    mut metadata: HashMap<String, String>,
    path: &Path,
) -> Result<()> {
    integrity::seal(&tensors, &mut metadata);
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, b, s)| (n.clone(), view(b, s)))
        .collect();
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::format(path, e.to_string()))?;
    let (header, data) = sorted_header(&bytes);
    crate::fsutil::write_atomic(path, |w| {
        w.write_all(&(header.len() as u64).to_le_bytes())?;
        w.write_all(&header)?;
        w.write_all(data)
    })
}

/// The header of a file `safetensors::serialize` made, its metadata sorted
/// by key, and the data after it. safetensors writes the metadata map in
/// hash order, different in every process; sorted, the same weights always
/// give the same bytes (runs can be compared with `cmp`).
fn sorted_header(bytes: &[u8]) -> (Vec<u8>, &[u8]) {
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let mut header: serde_json::Value =
        serde_json::from_slice(&bytes[8..8 + n]).expect("safetensors wrote JSON");
    if let Some(meta) = header
        .get_mut("__metadata__")
        .and_then(|m| m.as_object_mut())
    {
        let mut entries: Vec<_> = std::mem::take(meta).into_iter().collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        meta.extend(entries);
    }
    let mut json = serde_json::to_vec(&header).expect("JSON serialises");
    // As safetensors does: spaces up to a multiple of 8 bytes, so the data stays aligned.
    json.resize(json.len().next_multiple_of(8), b' ');
    (json, &bytes[8 + n..])
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

fn parse<'a>(bytes: &'a [u8], path: &Path) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes)
        .map_err(|e| Error::format(path, format!("not a valid safetensors file: {e}")))
}

fn metadata(bytes: &[u8], path: &Path) -> Result<HashMap<String, String>> {
    let (_, meta) =
        SafeTensors::read_metadata(bytes).map_err(|e| Error::format(path, e.to_string()))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// Copy an f32 tensor of exactly `len` values out of a file.
pub fn read_f32(st: &SafeTensors, name: &str, len: usize, path: &Path) -> Result<Vec<f32>> {
    let t = st
        .tensor(name)
        .map_err(|_| Error::format(path, format!("tensor {name:?} is missing")))?;
    if t.dtype() != Dtype::F32 {
        return Err(Error::format(
            path,
            format!("tensor {name:?} is {:?}, expected F32", t.dtype()),
        ));
    }
    if t.data().len() != len * 4 {
        return Err(Error::format(
            path,
            format!(
                "tensor {name:?} has shape {:?}, expected {len} values",
                t.shape()
            ),
        ));
    }
    Ok(t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Names of the zero biases written for `transformers` (absent from the
/// model; see [`crate::model::family::Family::absent_biases`]).
pub(crate) fn absent_biases(cfg: &ModelConfig) -> Vec<(String, usize)> {
    cfg.family().absent_biases(cfg)
}

/// A `transformers`-style GPT-2 config with the exact lmforge config inside.
/// `eot_token` is the tokenizer's end-of-text id (GPT-2's 50256), used as
/// `bos_token_id` and `eos_token_id`; `null` for a vocabulary without one
/// (characters), where `transformers` would otherwise assume 50256.
fn hf_config(cfg: &ModelConfig, eot_token: Option<u32>) -> serde_json::Value {
    if cfg.arch == Arch::Llama {
        return hf_llama::to_hf(cfg, eot_token);
    }
    serde_json::json!({
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.block_size,
        "n_ctx": cfg.block_size,
        "n_embd": cfg.n_embd,
        "n_layer": cfg.n_layer,
        "n_head": cfg.n_head,
        "n_inner": null,
        "activation_function": match cfg.activation { Activation::Gelu => "gelu_new", Activation::Relu => "relu", Activation::Silu => "silu" },
        "resid_pdrop": cfg.dropout,
        "embd_pdrop": cfg.dropout,
        "attn_pdrop": cfg.dropout,
        "layer_norm_epsilon": cfg.norm_eps(),
        "initializer_range": 0.02,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": eot_token,
        "eos_token_id": eot_token,
        "lmforge": cfg,
    })
}

/// Read a model config from `config.json`: lmforge's own, or a plain
/// Hugging Face GPT-2 config (pre-norm, biases, tied head).
fn model_config_from_json(json: &serde_json::Value, path: &Path) -> Result<ModelConfig> {
    if let Some(ours) = json.get("lmforge") {
        return serde_json::from_value(ours.clone())
            .map_err(|e| Error::format(path, e.to_string()));
    }
    if let Some(model_type) = json.get("model_type").and_then(|v| v.as_str())
        && hf_llama::MODEL_TYPES.contains(&model_type)
    {
        return hf_llama::from_hf(json, model_type).map_err(|message| Error::format(path, message));
    }
    check_hf_gpt2(json).map_err(|message| Error::format(path, message))?;
    let field = |name: &str| {
        hf_llama::required_usize_field(json, name).map_err(|message| Error::format(path, message))
    };
    let activation = match json
        .get("activation_function")
        .and_then(|v| v.as_str())
        .unwrap_or("gelu_new")
    {
        "gelu_new" | "gelu_pytorch_tanh" => Activation::Gelu,
        "relu" => Activation::Relu,
        other => {
            return Err(Error::format(
                path,
                format!("activation_function {other:?} is not supported"),
            ));
        }
    };
    Ok(ModelConfig {
        arch: Arch::Gpt,
        vocab_size: field("vocab_size")?,
        block_size: field("n_positions")?,
        n_layer: field("n_layer")?,
        n_head: field("n_head")?,
        n_embd: field("n_embd")?,
        dropout: 0.0,
        norm: Norm::Pre,
        activation,
        tie_embeddings: json
            .get("tie_word_embeddings")
            .and_then(|v| v.as_bool())
            .unwrap_or(true),
        bias: true,
        qkv_bias: true,
        lm_head_bias: false,
        llama: None,
        lora: None,
    })
}

/// The architectures `import-hf` and `--init-from` read.
pub const SUPPORTED_MODEL_TYPES: &str = "gpt2 (GPT2LMHeadModel: distilgpt2, gpt2, gpt2-medium, \
     gpt2-large, gpt2-xl), llama (LlamaForCausalLM: Llama 2 and 3, SmolLM, TinyLlama), qwen2 \
     (Qwen2ForCausalLM) and mistral (MistralForCausalLM)";

/// Refuse a Hugging Face config this GPT-2 cannot reproduce exactly.
fn check_hf_gpt2(json: &serde_json::Value) -> std::result::Result<(), String> {
    match json.get("model_type").and_then(|v| v.as_str()) {
        Some("gpt2") | None => {}
        Some(other) => {
            return Err(format!(
                "model_type {other:?} is not supported; lmforge reads {SUPPORTED_MODEL_TYPES}"
            ));
        }
    }
    let n_embd = json.get("n_embd").and_then(|v| v.as_u64());
    if let Some(inner) = json.get("n_inner").and_then(|v| v.as_u64())
        && Some(inner) != n_embd.map(|c| 4 * c)
    {
        return Err(format!(
            "n_inner = {inner}: lmforge's feed-forward is 4 x n_embd wide"
        ));
    }
    if let Some(eps) = json.get("layer_norm_epsilon").and_then(|v| v.as_f64())
        && (eps - crate::model::GPT_LAYER_NORM_EPS as f64).abs() > 1e-9
    {
        return Err(format!(
            "layer_norm_epsilon = {eps}: lmforge's layer norm uses {}",
            crate::model::GPT_LAYER_NORM_EPS
        ));
    }
    for flag in ["scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"] {
        if json.get(flag).and_then(|v| v.as_bool()) == Some(true) {
            return Err(format!("{flag} = true is not supported"));
        }
    }
    Ok(())
}

/// Write `model.safetensors` and `config.json` into `dir`; `eot_token` is
/// the tokenizer's end-of-text id, if it has one. Weights that are NaN or
/// infinite are refused: a diverged run must not replace a good checkpoint.
/// The model file records the CRC-32 of the config and of `dir`'s
/// `tokenizer.json` (when there is one), checked by [`load_model`] and
/// [`load_tokenizer`].
pub fn save_model(dir: &Path, model: &Model, params: &[f32], eot_token: Option<u32>) -> Result<()> {
    let path = dir.join(MODEL_FILE);
    for t in &model.layout.tensors {
        integrity::check_finite(&params[t.range.clone()], &t.name, &path)
            .map_err(|e| Error::NonFinite(format!("not saving the model: {e}")))?;
    }
    let mut tensors: Vec<(String, Vec<u8>, Vec<usize>)> = model
        .layout
        .tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                to_bytes(&params[t.range.clone()]),
                t.shape.clone(),
            )
        })
        .collect();
    for (name, len) in absent_biases(&model.config) {
        tensors.push((name, vec![0u8; len * 4], vec![len]));
    }
    let config_json = serde_json::to_vec(&model.config).expect("a model config serialises");
    let mut metadata = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        (
            integrity::CONFIG_KEY.to_string(),
            integrity::crc32_hex(&config_json),
        ),
    ]);
    if let Ok(tokenizer) = std::fs::read(dir.join(TOKENIZER_FILE)) {
        let crc = integrity::crc32_hex(&tokenizer);
        metadata.insert(integrity::TOKENIZER_KEY.to_string(), crc);
    }
    serialize(tensors, metadata, &path)?;
    save_config(dir, &model.config, eot_token)
}

/// Write `config.json` (a `transformers` GPT-2 config with lmforge's inside) into `dir`.
pub fn save_config(dir: &Path, cfg: &ModelConfig, eot_token: Option<u32>) -> Result<()> {
    let json = serde_json::to_vec_pretty(&hf_config(cfg, eot_token)).expect("config serialises");
    write_atomic_bytes(&dir.join(CONFIG_FILE), &json)
}

/// Read the model config of the run in `dir` (`config.json`) without its
/// weights. A config that cannot be built, or whose size does not fit in a
/// 64-bit count, is an error naming the file.
pub fn load_config(dir: &Path) -> Result<ModelConfig> {
    let config_path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::format(&config_path, e.to_string()))?;
    let cfg = model_config_from_json(&json, &config_path)?;
    let named = |e: Error| Error::format(&config_path, e.to_string());
    cfg.validate().map_err(named)?;
    crate::memory::param_count(&cfg).map_err(named)?;
    Ok(cfg)
}

/// Load `config.json` and the weights (see [`weights`]) from `dir`: the
/// checksums verified (each file's own, and the config's that lmforge's
/// `model.safetensors` recorded), every tensor present, every value finite.
pub fn load_model(dir: &Path) -> Result<(Model, Vec<f32>)> {
    let config = load_config(dir)?;
    weights::check_size(dir, &config)?;
    let model = Model::new(config)?;
    let params = weights::load_params(dir, &model)?;
    let path = dir.join(MODEL_FILE);
    if path.exists() {
        let meta = integrity::header_metadata(&path)?;
        let config_json = serde_json::to_vec(&model.config).expect("a model config serialises");
        let config_path = dir.join(CONFIG_FILE);
        let what = "model config";
        integrity::verify_companion(
            &meta,
            integrity::CONFIG_KEY,
            &config_json,
            &config_path,
            what,
        )?;
    }
    Ok((model, params))
}

/// Load `dir`'s `tokenizer.json` for `model`: it must be the one the model
/// was saved with (when the model file recorded its checksum) and have the
/// model's vocabulary size. Only a Hugging Face model (a `config.json`
/// without lmforge's own config) may have more embeddings than tokens
/// (vocabularies padded to a round number).
pub fn load_tokenizer(dir: &Path, model: &Model) -> Result<Box<dyn crate::tokenizer::Tokenizer>> {
    let path = dir.join(TOKENIZER_FILE);
    let bytes = read_file(&path)?;
    if dir.join(MODEL_FILE).exists() {
        let meta = integrity::header_metadata(&dir.join(MODEL_FILE))?;
        integrity::verify_companion(&meta, integrity::TOKENIZER_KEY, &bytes, &path, "tokenizer")?;
    }
    let tokenizer = crate::tokenizer::load(&path)?;
    let (tokens, v) = (tokenizer.vocab_size(), model.config.vocab_size);
    let padded_hf = tokens < v && !is_lmforge_config(dir);
    if tokens != v && !padded_hf {
        return Err(Error::format(
            &path,
            format!(
                "has {tokens} tokens, the model in {MODEL_FILE} a vocabulary of {v}: they do not \
                 belong together (a tokenizer from another run, or a damaged file)"
            ),
        ));
    }
    Ok(tokenizer)
}

/// Whether `dir`'s `config.json` carries lmforge's own model config.
fn is_lmforge_config(dir: &Path) -> bool {
    std::fs::read(dir.join(CONFIG_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|json| json.get("lmforge").is_some())
}

/// Everything needed to continue training exactly where it stopped.
pub struct TrainState {
    /// Optimizer updates completed.
    pub step: u64,
    /// Training wall time so far, summed over resumed sessions.
    pub elapsed_s: f64,
    /// The trained parameters: all of them, or a fine-tune's unfrozen tail
    /// (its frozen head is the parent's, rebuilt on resume).
    pub params: Vec<f32>,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

/// Write `train_state.safetensors` into `dir`: the fields of a [`TrainState`], borrowed.
pub fn save_train_state(
    dir: &Path,
    step: u64,
    elapsed_s: f64,
    params: &[f32],
    m: &[f32],
    v: &[f32],
) -> Result<()> {
    let n = params.len();
    let tensors = vec![
        ("params".to_string(), to_bytes(params), vec![n]),
        ("adam.m".to_string(), to_bytes(m), vec![n]),
        ("adam.v".to_string(), to_bytes(v), vec![n]),
    ];
    let metadata = HashMap::from([
        ("magic".to_string(), STATE_MAGIC.to_string()),
        ("version".to_string(), STATE_VERSION.to_string()),
        ("step".to_string(), step.to_string()),
        ("elapsed_s".to_string(), elapsed_s.to_string()),
    ]);
    serialize(tensors, metadata, &dir.join(STATE_FILE))
}

/// Read `train_state.safetensors` for a model that trains `num_params` parameters.
pub fn load_train_state(dir: &Path, num_params: usize) -> Result<TrainState> {
    let path = dir.join(STATE_FILE);
    let bytes = read_file(&path)?;
    let meta = metadata(&bytes, &path)?;
    if meta.get("magic").map(String::as_str) != Some(STATE_MAGIC) {
        return Err(Error::format(&path, "not an lmforge training-state file"));
    }
    if meta.get("version").map(String::as_str) != Some(STATE_VERSION) {
        return Err(Error::format(
            &path,
            format!(
                "unsupported training-state version {:?}",
                meta.get("version")
            ),
        ));
    }
    let number = |key: &str| {
        meta.get(key)
            .and_then(|s| s.parse::<f64>().ok())
            .ok_or_else(|| Error::format(&path, format!("metadata {key:?} is missing")))
    };
    let st = parse(&bytes, &path)?;
    integrity::verify(&st, &meta, &path)?;
    let finite = |name: &str| {
        let values = read_f32(&st, name, num_params, &path)?;
        integrity::check_finite(&values, name, &path)?;
        Ok::<_, Error>(values)
    };
    Ok(TrainState {
        step: number("step")? as u64,
        elapsed_s: number("elapsed_s")?,
        params: finite("params")?,
        m: finite("adam.m")?,
        v: finite("adam.v")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(bias: bool, tie: bool) -> Model {
        Model::new(ModelConfig {
            arch: Arch::Gpt,
            vocab_size: 7,
            block_size: 4,
            n_layer: 1,
            n_head: 2,
            n_embd: 4,
            dropout: 0.1,
            norm: Norm::Post,
            activation: Activation::Relu,
            tie_embeddings: tie,
            bias,
            qkv_bias: false,
            lm_head_bias: !tie,
            llama: None,
            lora: None,
        })
        .unwrap()
    }

    #[test]
    fn model_round_trips_with_zero_biases_for_transformers() {
        let dir = tempfile::tempdir().unwrap();
        for (bias, tie) in [(false, true), (true, false)] {
            let model = tiny(bias, tie);
            let params: Vec<f32> = (0..model.num_params())
                .map(|i| i as f32 * 0.25 - 3.0)
                .collect();
            save_model(dir.path(), &model, &params, None).unwrap();
            let (loaded, loaded_params) = load_model(dir.path()).unwrap();
            assert_eq!(loaded.config, model.config);
            assert_eq!(loaded_params, params);
            let bytes = std::fs::read(dir.path().join(MODEL_FILE)).unwrap();
            let st = SafeTensors::deserialize(&bytes).unwrap();
            assert!(
                st.tensor("transformer.h.0.attn.c_attn.bias").is_ok(),
                "zero qkv bias written"
            );
            assert_eq!(st.tensor("lm_head.weight").is_ok(), !tie);
        }
    }

    /// A diverged model is never written over a good checkpoint.
    #[test]
    fn non_finite_weights_are_not_saved() {
        let dir = tempfile::tempdir().unwrap();
        let model = tiny(true, true);
        let mut params = vec![0.5f32; model.num_params()];
        save_model(dir.path(), &model, &params, None).unwrap();
        let good = std::fs::read(dir.path().join(MODEL_FILE)).unwrap();
        params[3] = f32::INFINITY;
        let err = save_model(dir.path(), &model, &params, None).unwrap_err();
        assert!(matches!(err, Error::NonFinite(_)), "{err}");
        assert_eq!(std::fs::read(dir.path().join(MODEL_FILE)).unwrap(), good);
    }

    #[test]
    fn train_state_round_trips_and_rejects_other_files() {
        let dir = tempfile::tempdir().unwrap();
        save_train_state(dir.path(), 17, 3.5, &[1.0, 2.0], &[0.1, 0.2], &[0.01, 0.02]).unwrap();
        let back = load_train_state(dir.path(), 2).unwrap();
        assert_eq!((back.step, back.elapsed_s), (17, 3.5));
        assert_eq!(
            (back.params, back.m, back.v),
            (vec![1.0, 2.0], vec![0.1, 0.2], vec![0.01, 0.02])
        );
        assert!(
            load_train_state(dir.path(), 3).is_err(),
            "parameter count mismatch is an error"
        );
        std::fs::write(dir.path().join(STATE_FILE), b"garbage").unwrap();
        let err = load_train_state(dir.path(), 2).err().unwrap().to_string();
        assert!(err.contains(STATE_FILE), "{err}");
    }
}
