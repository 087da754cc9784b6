//! Hugging Face configs of the Llama family (`model_type` `llama`, `qwen2`,
//! `mistral`; SmolLM and TinyLlama are `llama`): read into a [`ModelConfig`]
//! with `arch = llama`, and written back for `LlamaForCausalLM` or, for a
//! model with q/k/v biases, `Qwen2ForCausalLM`.
//!
//! Both spellings of the rotary settings are read: `rope_theta` and
//! `rope_scaling` (`transformers` 4) and `rope_parameters` (`transformers`
//! 5). What lmforge's Llama cannot compute exactly is refused by name: an
//! activation other than SiLU, a `head_dim` other than `hidden_size /
//! num_attention_heads`, biases on `o_proj` or the MLP, other `rope_type`s.
//! A sliding window (Mistral, Qwen2 with `use_sliding_window`) bounds the
//! context: within it, windowed attention is ordinary causal attention. The
//! context is also capped at [`MAX_IMPORTED_CONTEXT`] positions, since
//! decoding allocates a cache of that many.

use crate::model::{Activation, Arch, LlamaConfig, ModelConfig, Norm, RopeScaling};
use serde_json::{Value, json};

/// The Llama-family `model_type`s lmforge reads.
pub const MODEL_TYPES: [&str; 3] = ["llama", "qwen2", "mistral"];

/// The longest context an imported model keeps (Llama 3.2's 131072
/// positions would make a 1B model's KV cache 8 GB).
pub const MAX_IMPORTED_CONTEXT: usize = 8192;

/// A count in a Hugging Face config (a size, a number of layers): `None`
/// when absent or null; when present but not a whole number (`-32`,
/// `"50257"`, `2.5`), an error saying what it is.
pub fn usize_field(json: &Value, name: &str) -> Result<Option<usize>, String> {
    let value = match json.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(value) => value,
    };
    let count = value.as_u64().and_then(|n| usize::try_from(n).ok());
    count.map(Some).ok_or_else(|| {
        let kind = match value {
            Value::String(_) => " (a string)",
            Value::Number(_) => "",
            _ => " (not a number)",
        };
        format!("field {name:?} is {value}{kind}: expected a whole number, 0 or more")
    })
}

/// [`usize_field`], which must be there.
pub fn required_usize_field(json: &Value, name: &str) -> Result<usize, String> {
    usize_field(json, name)?.ok_or_else(|| format!("field {name:?} is missing"))
}

fn f32_field(obj: &Value, name: &str) -> Result<f32, String> {
    obj.get(name)
        .and_then(Value::as_f64)
        .map(|v| v as f32)
        .ok_or_else(|| format!("rope setting {name:?} is missing"))
}

/// `rope_scaling` (or `rope_parameters`) as lmforge's enum.
fn rope_scaling(json: &Value) -> Result<RopeScaling, String> {
    let scaling = match json.get("rope_scaling") {
        Some(v) if !v.is_null() => v,
        _ => match json.get("rope_parameters") {
            Some(v) if !v.is_null() => v,
            _ => return Ok(RopeScaling::None),
        },
    };
    let kind = scaling
        .get("rope_type")
        .or_else(|| scaling.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    match kind {
        "default" => Ok(RopeScaling::None),
        "linear" => Ok(RopeScaling::Linear {
            factor: f32_field(scaling, "factor")?,
        }),
        "llama3" => Ok(RopeScaling::Llama3 {
            factor: f32_field(scaling, "factor")?,
            low_freq_factor: f32_field(scaling, "low_freq_factor")?,
            high_freq_factor: f32_field(scaling, "high_freq_factor")?,
            original_max_position_embeddings: usize_field(
                scaling,
                "original_max_position_embeddings",
            )?
            .ok_or("rope setting \"original_max_position_embeddings\" is missing")?,
        }),
        other => Err(format!(
            "rope_type {other:?} is not supported; lmforge computes default, linear and llama3"
        )),
    }
}

/// `rope_theta`, at the top level or inside `rope_parameters` (10000 if neither).
fn rope_theta(json: &Value) -> f32 {
    json.get("rope_theta")
        .or_else(|| {
            json.get("rope_parameters")
                .and_then(|p| p.get("rope_theta"))
        })
        .and_then(Value::as_f64)
        .unwrap_or(10_000.0) as f32
}

/// Refuse what the Llama wiring cannot reproduce exactly.
fn check_supported(json: &Value, model_type: &str, c: usize, nh: usize) -> Result<(), String> {
    let act = json
        .get("hidden_act")
        .and_then(Value::as_str)
        .unwrap_or("silu");
    if act != "silu" {
        return Err(format!("hidden_act {act:?} is not supported (only silu)"));
    }
    if let Some(hd) = usize_field(json, "head_dim")?
        && nh > 0
        && hd * nh != c
    {
        return Err(format!(
            "head_dim = {hd} with hidden_size {c} and {nh} heads: lmforge's heads are hidden_size / num_attention_heads wide"
        ));
    }
    let flag = |name: &str| json.get(name).and_then(Value::as_bool) == Some(true);
    if flag("mlp_bias") {
        return Err("mlp_bias = true is not supported".into());
    }
    if model_type != "qwen2" && flag("attention_bias") {
        return Err("attention_bias = true (biases on q/k/v and o_proj) is not supported".into());
    }
    Ok(())
}

/// The context: `max_position_embeddings`, bounded by a sliding window and
/// by [`MAX_IMPORTED_CONTEXT`].
fn context(json: &Value, model_type: &str) -> Result<usize, String> {
    let max = required_usize_field(json, "max_position_embeddings")?;
    let windowed = match model_type {
        "qwen2" => json.get("use_sliding_window").and_then(Value::as_bool) == Some(true),
        _ => true,
    };
    let window = usize_field(json, "sliding_window")?.filter(|_| windowed);
    Ok(max.min(window.unwrap_or(max)).min(MAX_IMPORTED_CONTEXT))
}

/// Read a Hugging Face Llama-family config.
pub fn from_hf(json: &Value, model_type: &str) -> Result<ModelConfig, String> {
    let field = |name: &str| required_usize_field(json, name);
    let (c, nh) = (field("hidden_size")?, field("num_attention_heads")?);
    check_supported(json, model_type, c, nh)?;
    let n_kv_head = usize_field(json, "num_key_value_heads")?.unwrap_or(nh);
    let eps = json
        .get("rms_norm_eps")
        .and_then(Value::as_f64)
        .unwrap_or(1e-6);
    Ok(ModelConfig {
        arch: Arch::Llama,
        vocab_size: field("vocab_size")?,
        block_size: context(json, model_type)?,
        n_layer: field("num_hidden_layers")?,
        n_head: nh,
        n_embd: c,
        dropout: 0.0,
        norm: Norm::Pre,
        activation: Activation::Silu,
        tie_embeddings: json
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        bias: false,
        qkv_bias: model_type == "qwen2",
        lm_head_bias: false,
        llama: Some(LlamaConfig {
            n_kv_head,
            intermediate_size: field("intermediate_size")?,
            rope_theta: rope_theta(json),
            rope_scaling: rope_scaling(json)?,
            rms_norm_eps: eps as f32,
        }),
        lora: None,
    })
}

/// An `f32` as the decimal it was written as (`1e-5`, not `9.99999974e-6`).
fn decimal(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

/// `rope_scaling` as `transformers` 4 writes it (`transformers` 5 reads it too).
fn rope_scaling_json(s: RopeScaling) -> Value {
    match s {
        RopeScaling::None => Value::Null,
        RopeScaling::Linear { factor } => json!({"rope_type": "linear", "factor": decimal(factor)}),
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => json!({
            "rope_type": "llama3", "factor": decimal(factor),
            "low_freq_factor": decimal(low_freq_factor), "high_freq_factor": decimal(high_freq_factor),
            "original_max_position_embeddings": original_max_position_embeddings,
        }),
    }
}

/// A `transformers` config for a Llama-family model: `qwen2` when it has
/// q/k/v biases (`Qwen2ForCausalLM` has exactly those), else `llama`, with
/// the exact lmforge config inside.
pub fn to_hf(cfg: &ModelConfig, eot_token: Option<u32>) -> Value {
    let l = cfg
        .llama
        .as_ref()
        .expect("a Llama-family config has its shape");
    let (model_type, class) = match cfg.qkv_bias {
        true => ("qwen2", "Qwen2ForCausalLM"),
        false => ("llama", "LlamaForCausalLM"),
    };
    let mut hf = json!({
        "model_type": model_type,
        "architectures": [class],
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.n_embd,
        "intermediate_size": l.intermediate_size,
        "num_hidden_layers": cfg.n_layer,
        "num_attention_heads": cfg.n_head,
        "num_key_value_heads": l.n_kv_head,
        "head_dim": cfg.head_size(),
        "max_position_embeddings": cfg.block_size,
        "hidden_act": "silu",
        "rms_norm_eps": decimal(l.rms_norm_eps),
        "rope_theta": decimal(l.rope_theta),
        "rope_scaling": rope_scaling_json(l.rope_scaling),
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "bos_token_id": eot_token,
        "eos_token_id": eot_token,
        "lmforge": cfg,
    });
    match model_type {
        "qwen2" => hf["use_sliding_window"] = false.into(),
        _ => {
            hf["attention_bias"] = false.into();
            hf["mlp_bias"] = false.into();
        }
    }
    hf
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SmolLM2-135M's config.json as published (transformers 4 spelling).
    const SMOLLM2_135M: &str = r#"{"architectures": ["LlamaForCausalLM"], "attention_bias": false,
      "attention_dropout": 0.0, "bos_token_id": 0, "eos_token_id": 0, "head_dim": 64,
      "hidden_act": "silu", "hidden_size": 576, "initializer_range": 0.041666666666666664,
      "intermediate_size": 1536, "is_llama_config": true, "max_position_embeddings": 8192,
      "mlp_bias": false, "model_type": "llama", "num_attention_heads": 9, "num_hidden_layers": 30,
      "num_key_value_heads": 3, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
      "rope_interleaved": false, "rope_scaling": null, "rope_theta": 100000,
      "tie_word_embeddings": true, "torch_dtype": "bfloat16", "transformers_version": "4.42.3",
      "use_cache": true, "vocab_size": 49152}"#;

    #[test]
    fn smollm2_config_reads_as_its_shape() {
        let json: Value = serde_json::from_str(SMOLLM2_135M).unwrap();
        let cfg = from_hf(&json, "llama").unwrap();
        cfg.validate().unwrap();
        assert_eq!(
            (cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size),
            (30, 9, 576, 8192)
        );
        let l = cfg.llama.as_ref().unwrap();
        assert_eq!(
            (l.n_kv_head, l.intermediate_size, l.rope_theta),
            (3, 1536, 100_000.0)
        );
        assert!(cfg.tie_embeddings && !cfg.qkv_bias);
        // Written back, it reads as the same config.
        assert_eq!(from_hf(&to_hf(&cfg, Some(0)), "llama").unwrap(), cfg);
    }

    #[test]
    fn llama3_scaling_in_both_spellings() {
        let v4 = json!({"rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3", "factor": 32.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}});
        let v5 = json!({"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}});
        assert_eq!(rope_scaling(&v4).unwrap(), rope_scaling(&v5).unwrap());
        assert_eq!(rope_theta(&v4), rope_theta(&v5));
        let yarn = json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}});
        assert!(rope_scaling(&yarn).unwrap_err().contains("\"yarn\""));
    }

    #[test]
    fn what_cannot_be_reproduced_is_refused_by_name() {
        let mut json: Value = serde_json::from_str(SMOLLM2_135M).unwrap();
        json["hidden_act"] = "gelu".into();
        assert!(
            from_hf(&json, "llama")
                .unwrap_err()
                .contains("hidden_act \"gelu\"")
        );
        let mut json: Value = serde_json::from_str(SMOLLM2_135M).unwrap();
        json["attention_bias"] = true.into();
        assert!(
            from_hf(&json, "llama")
                .unwrap_err()
                .contains("attention_bias")
        );
        let mut json: Value = serde_json::from_str(SMOLLM2_135M).unwrap();
        json["head_dim"] = 128.into();
        assert!(
            from_hf(&json, "llama")
                .unwrap_err()
                .contains("head_dim = 128")
        );
    }
}
