//! The model families in GGUF: architecture keys, and how a tensor's
//! layout differs from lmforge's (Hugging Face's), used by both export and
//! import. Each tensor's GGUF name and layout change are its family's
//! ([`crate::model::family`]: the tables in [`crate::model::family::gpt2`]
//! and [`crate::model::family::llama`]); GPT-2's `Conv1D` weights are
//! transposed, a Llama's `q` and `k` rows permuted.
//!
//! **The rotary permutation.** Hugging Face's Llama rotates the two halves
//! of each head (`rotate_half`: dimension `i` pairs with `i + hs/2`); llama.cpp's
//! `llama` architecture rotates neighbours (`2i` with `2i + 1`), as Meta's
//! original weights did. `convert_hf_to_gguf.py` therefore reorders the rows
//! of `q` and `k` within each head: GGUF row `2i + j` is Hugging Face row
//! `j * hs/2 + i` (`j` = 0, 1). `qwen2` files use the halves as Hugging Face
//! does (llama.cpp's NEOX rope) and are not permuted.

use super::file::{GgufFile, Value};
use crate::checkpoint::hf_llama::MAX_IMPORTED_CONTEXT;
use crate::model::family::ToGguf;
use crate::model::{Activation, Arch, LlamaConfig, ModelConfig, Norm, RopeScaling};

/// How a tensor's values are laid out in GGUF relative to lmforge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    Same,
    /// A GPT-2 `Conv1D` weight `(IN, OUT)`, stored `(OUT, IN)`.
    Transpose,
    /// Rows reordered per head for llama.cpp's rotary pairs; `heads` heads.
    Rope {
        heads: usize,
    },
}

/// The GGUF architecture of a config, or why llama.cpp cannot run it.
pub fn architecture(cfg: &ModelConfig) -> Result<&'static str, String> {
    match cfg.arch {
        Arch::Bigram => Err("a bigram table has no GGUF architecture".into()),
        Arch::Llama if cfg.qkv_bias => Ok("qwen2"),
        Arch::Llama => Ok("llama"),
        Arch::Gpt => {
            if cfg.norm != Norm::Pre {
                return Err(
                    "this GPT puts layer norm after each block (norm = post); llama.cpp's \
                            gpt2 is pre-norm: train with --norm pre to export"
                        .into(),
                );
            }
            if cfg.activation != Activation::Gelu {
                return Err(format!(
                    "this GPT's feed-forward uses {:?}; llama.cpp's gpt2 uses GELU",
                    cfg.activation
                ));
            }
            if cfg.lm_head_bias {
                return Err("llama.cpp's gpt2 has no bias on the LM head".into());
            }
            Ok("gpt2")
        }
    }
}

/// The GGUF name and layout change of the lmforge tensor `name`, if it has one
/// (the rotary permutation only applies for `arch` `llama`).
pub fn gguf_name(cfg: &ModelConfig, arch: &str, name: &str) -> Option<(String, Change)> {
    let family = cfg.family();
    let placed = family.find(name)?;
    let gguf = family.gguf_name(placed)?;
    let rope = |heads: usize| match arch {
        "llama" => Change::Rope { heads },
        _ => Change::Same,
    };
    let change = match placed.tensor.to_gguf {
        ToGguf::Same => Change::Same,
        ToGguf::Transpose => Change::Transpose,
        ToGguf::RopeQ => rope(cfg.n_head),
        ToGguf::RopeK => rope(cfg.n_kv_head()),
    };
    Some((gguf, change))
}

/// Apply `change` to `values` of lmforge's `shape` (`to_gguf`), or undo it.
pub fn apply(change: Change, values: &[f32], shape: &[usize], to_gguf: bool) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    apply_into(change, values, shape, to_gguf, &mut out);
    out
}

/// [`apply`] into `out` (as long as `values`).
pub fn apply_into(change: Change, values: &[f32], shape: &[usize], to_gguf: bool, out: &mut [f32]) {
    let (rows, cols) = match shape {
        [rows, cols] => (*rows, *cols),
        [n] => (*n, 1),
        _ => return out.copy_from_slice(values),
    };
    match change {
        Change::Same => out.copy_from_slice(values),
        Change::Transpose => {
            // lmforge (rows, cols) -> GGUF (cols, rows); back, the other way round.
            let (r, c) = if to_gguf { (rows, cols) } else { (cols, rows) };
            for i in 0..r {
                for j in 0..c {
                    out[j * r + i] = values[i * c + j];
                }
            }
        }
        Change::Rope { heads } => {
            let hs = rows / heads;
            for h in 0..heads {
                for i in 0..hs / 2 {
                    for j in 0..2 {
                        let gguf = h * hs + 2 * i + j;
                        let hf = h * hs + j * hs / 2 + i;
                        let (to, from) = if to_gguf { (gguf, hf) } else { (hf, gguf) };
                        out[to * cols..(to + 1) * cols]
                            .copy_from_slice(&values[from * cols..(from + 1) * cols]);
                    }
                }
            }
        }
    }
}

/// The GGUF row each of lmforge's `rows` output rows comes from: the rotary
/// permutation undone ([`Change::Rope`], as [`apply`] does to whole rows), the
/// identity otherwise (ggml stores every weight as `OUT` rows, GPT-2's transposed).
pub fn rows_from_gguf(change: Change, rows: usize) -> Vec<usize> {
    let Change::Rope { heads } = change else {
        return (0..rows).collect();
    };
    let hs = rows / heads;
    let mut from = vec![0; rows];
    for h in 0..heads {
        for i in 0..hs / 2 {
            for j in 0..2 {
                from[h * hs + j * hs / 2 + i] = h * hs + 2 * i + j;
            }
        }
    }
    from
}

fn kv(key: String, value: Value) -> (String, Value) {
    (key, value)
}

/// The architecture keys (`gpt2.*`, `llama.*`, `qwen2.*`) of a config.
pub fn hparams(cfg: &ModelConfig, arch: &str) -> Vec<(String, Value)> {
    let u = |n: usize| Value::U32(n as u32);
    let k = |name: &str| format!("{arch}.{name}");
    let mut keys = vec![
        kv(k("context_length"), u(cfg.block_size)),
        kv(k("embedding_length"), u(cfg.n_embd)),
        kv(k("feed_forward_length"), u(cfg.ffn_width())),
        kv(k("block_count"), u(cfg.n_layer)),
        kv(k("attention.head_count"), u(cfg.n_head)),
    ];
    let Some(l) = &cfg.llama else {
        let eps = cfg.norm_eps();
        keys.push(kv(k("attention.layer_norm_epsilon"), Value::F32(eps)));
        return keys;
    };
    keys.extend([
        kv(k("vocab_size"), u(cfg.vocab_size)),
        kv(k("attention.head_count_kv"), u(l.n_kv_head)),
        kv(k("rope.dimension_count"), u(cfg.head_size())),
        kv(
            k("attention.layer_norm_rms_epsilon"),
            Value::F32(l.rms_norm_eps),
        ),
        kv(k("rope.freq_base"), Value::F32(l.rope_theta)),
    ]);
    if let RopeScaling::Linear { factor } = l.rope_scaling {
        keys.push(kv(k("rope.scaling.type"), Value::String("linear".into())));
        keys.push(kv(k("rope.scaling.factor"), Value::F32(factor)));
    }
    keys
}

/// Llama 3.1's frequency scaling as the per-frequency divisors llama.cpp
/// reads from the tensor `rope_freqs.weight` (`convert_hf_to_gguf.py`'s
/// `generate_extra_tensors`); `None` without that scaling.
pub fn rope_freqs(cfg: &ModelConfig) -> Option<Vec<f32>> {
    let l = cfg.llama.as_ref()?;
    match l.rope_scaling {
        RopeScaling::Llama3 { .. } => Some(llama3_factors(
            l.rope_theta,
            cfg.head_size(),
            l.rope_scaling,
        )),
        _ => None,
    }
}

/// The divisor of each of the `dim / 2` rotary frequencies under `scaling`
/// (1 where Llama 3.1's scaling keeps a frequency, `factor` where it divides it).
fn llama3_factors(theta: f32, dim: usize, scaling: RopeScaling) -> Vec<f32> {
    let RopeScaling::Llama3 {
        factor,
        low_freq_factor: low,
        high_freq_factor: high,
        original_max_position_embeddings,
    } = scaling
    else {
        return vec![1.0; dim / 2];
    };
    let old = original_max_position_embeddings as f32;
    let (low_wavelen, high_wavelen) = (old / low, old / high);
    (0..dim / 2)
        .map(|i| {
            let freq = 1.0 / theta.powf((2 * i) as f32 / dim as f32);
            let wavelen = 2.0 * std::f32::consts::PI / freq;
            if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            }
        })
        .collect()
}

/// Llama 3.1's scaling settings that give the divisors `factors` of a
/// `rope_freqs.weight` tensor. The divisors fix only the blend's line, so
/// `original_max_position_embeddings` is taken as 8192 (Llama 3.1's) and the
/// two frequency factors solved for; the result is checked to reproduce
/// every divisor (to 1e-4), else `None`.
fn llama3_from_factors(factors: &[f32], theta: f32, dim: usize) -> Option<RopeScaling> {
    let factor = factors.iter().copied().fold(1.0f32, f32::max);
    let old = 8192.0f32;
    let wavelen = |i: usize| 2.0 * std::f32::consts::PI * theta.powf((2 * i) as f32 / dim as f32);
    // (low, high, original context): Llama 3.1's, then ones fitted below.
    let mut candidates = vec![(1.0f32, 4.0f32, old)];
    // Where blended: s = (1/f - 1/factor) / (1 - 1/factor) = (old/wavelen - low) / (high - low).
    let blended: Vec<(f32, f32)> = (factors.iter().enumerate())
        .filter(|(_, f)| **f > 1.0 + 1e-6 && **f < factor * (1.0 - 1e-6))
        .map(|(i, f)| {
            let freq = 1.0 / theta.powf((2 * i) as f32 / dim as f32);
            let x = old * freq / (2.0 * std::f32::consts::PI);
            (x, (1.0 / f - 1.0 / factor) / (1.0 - 1.0 / factor))
        })
        .collect();
    if let (Some(&(x0, s0)), Some(&(x1, s1))) = (blended.first(), blended.last())
        && (x1 - x0).abs() > 0.0
    {
        let slope = (s1 - s0) / (x1 - x0);
        let low = x0 - s0 / slope;
        candidates.push((low, low + 1.0 / slope, old));
    }
    // With low 1 and high 4, one blended frequency gives the context
    // (s = (old/wavelen - 1) / 3); with none, any context between the kept
    // and the divided wavelengths does.
    if let Some(i) =
        (0..factors.len()).find(|&i| factors[i] > 1.0 + 1e-6 && factors[i] < factor * (1.0 - 1e-6))
    {
        let s = (1.0 / factors[i] - 1.0 / factor) / (1.0 - 1.0 / factor);
        candidates.push((1.0, 4.0, ((3.0 * s + 1.0) * wavelen(i)).round()));
    }
    if let Some(i) = factors.iter().position(|&f| f >= factor * (1.0 - 1e-6)) {
        candidates.push((1.0, 4.0, wavelen(i).floor()));
    }
    candidates.into_iter().find_map(|(low, high, old)| {
        let scaling = RopeScaling::Llama3 {
            factor,
            low_freq_factor: low,
            high_freq_factor: high,
            original_max_position_embeddings: old as usize,
        };
        let again = llama3_factors(theta, dim, scaling);
        let close = again
            .iter()
            .zip(factors)
            .all(|(a, b)| (a - b).abs() <= 1e-4 * b.abs().max(1.0));
        close.then_some(scaling)
    })
}

/// The model config a GGUF file describes, or what lmforge cannot run in it.
pub fn config(file: &GgufFile) -> Result<ModelConfig, String> {
    let arch = file
        .get("general.architecture")
        .and_then(Value::as_str)
        .ok_or("general.architecture is missing")?;
    if !["gpt2", "llama", "mistral", "qwen2"].contains(&arch) {
        return Err(format!(
            "architecture {arch:?} is not supported; lmforge reads gpt2, llama, mistral and qwen2"
        ));
    }
    let num = |name: &str| {
        file.get(&format!("{arch}.{name}"))
            .and_then(Value::as_u64)
            .map(|v| v as usize)
            .ok_or(format!("{arch}.{name} is missing"))
    };
    let float = |name: &str| file.get(&format!("{arch}.{name}")).and_then(Value::as_f64);
    let embd = file
        .tensor("token_embd.weight")
        .ok_or("tensor token_embd.weight is missing")?;
    let vocab_size = embd.shape()[0];
    let (c, nh) = (num("embedding_length")?, num("attention.head_count")?);
    let mut cfg = ModelConfig {
        arch: Arch::Gpt,
        vocab_size,
        block_size: num("context_length")?.min(MAX_IMPORTED_CONTEXT),
        n_layer: num("block_count")?,
        n_head: nh,
        n_embd: c,
        dropout: 0.0,
        norm: Norm::Pre,
        activation: Activation::Gelu,
        tie_embeddings: file.tensor("output.weight").is_none(),
        bias: true,
        qkv_bias: true,
        lm_head_bias: false,
        llama: None,
        lora: None,
    };
    match arch {
        "gpt2" => {
            if num("feed_forward_length")? != 4 * c {
                return Err("gpt2.feed_forward_length is not 4 x embedding_length".into());
            }
            if file
                .tensor("output.weight")
                .is_some_and(|o| same_values(file, o, embd))
            {
                cfg.tie_embeddings = true;
            }
        }
        // llama, mistral, qwen2 (checked above)
        _ => {
            if nh == 0 || num("rope.dimension_count").unwrap_or(c / nh) * nh != c {
                return Err(format!(
                    "{arch}.rope.dimension_count: lmforge rotates whole heads of embedding_length / head_count"
                ));
            }
            let theta = float("rope.freq_base").unwrap_or(10_000.0) as f32;
            let rope_scaling = match file
                .get(&format!("{arch}.rope.scaling.type"))
                .and_then(Value::as_str)
            {
                None | Some("none") => RopeScaling::None,
                Some("linear") => RopeScaling::Linear {
                    factor: float("rope.scaling.factor").ok_or("rope.scaling.factor is missing")?
                        as f32,
                },
                Some(other) => return Err(format!("rope scaling {other:?} is not supported")),
            };
            let rope_scaling = match file.tensor("rope_freqs.weight") {
                Some(t) if t.len() as usize == c / nh / 2 => {
                    llama3_from_factors(&file.tensor_f32(t), theta, c / nh)
                        .ok_or("rope_freqs.weight does not follow Llama 3.1's frequency scaling")?
                }
                Some(_) => {
                    return Err(
                        "rope_freqs.weight does not have one value per rotary frequency".into(),
                    );
                }
                None => rope_scaling,
            };
            cfg.arch = Arch::Llama;
            (cfg.activation, cfg.bias) = (Activation::Silu, false);
            cfg.qkv_bias = file.tensor("blk.0.attn_q.bias").is_some();
            cfg.llama = Some(LlamaConfig {
                n_kv_head: num("attention.head_count_kv").unwrap_or(nh),
                intermediate_size: num("feed_forward_length")?,
                rope_theta: theta,
                rope_scaling,
                rms_norm_eps: float("attention.layer_norm_rms_epsilon").ok_or(format!(
                    "{arch}.attention.layer_norm_rms_epsilon is missing"
                ))? as f32,
            });
        }
    }
    Ok(cfg)
}

/// Whether two tensors hold the same values (GPT-2 files repeat the
/// embedding as `output.weight`).
fn same_values(file: &GgufFile, a: &super::file::TensorInfo, b: &super::file::TensorInfo) -> bool {
    a.dims == b.dims && a.ty == b.ty && file.tensor_bytes(a) == file.tensor_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_undo() {
        let values: Vec<f32> = (0..24).map(|i| i as f32).collect();
        for (change, shape) in [
            (Change::Transpose, vec![4, 6]),
            (Change::Rope { heads: 2 }, vec![8, 3]),
            (Change::Rope { heads: 1 }, vec![4]),
        ] {
            let n: usize = shape.iter().product();
            let there = apply(change, &values[..n], &shape, true);
            assert_ne!(there, values[..n], "{change:?} changes something");
            assert_eq!(apply(change, &there, &shape, false), values[..n]);
        }
        // Llama 3.1's scaling survives the trip through rope_freqs.
        let scaling = RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        };
        let factors = llama3_factors(500_000.0, 64, scaling);
        assert_eq!(llama3_from_factors(&factors, 500_000.0, 64), Some(scaling));
        // One head of 4 rows: GGUF rows are HF rows 0, 2, 1, 3.
        let rope = apply(Change::Rope { heads: 1 }, &[0.0, 1.0, 2.0, 3.0], &[4], true);
        assert_eq!(rope, vec![0.0, 2.0, 1.0, 3.0]);
        // Whole rows move as apply moves them (the native loader's blocks).
        let (rows, heads) = (8, 2);
        let gguf: Vec<f32> = (0..rows).map(|i| i as f32).collect();
        let undone = apply(Change::Rope { heads }, &gguf, &[rows, 1], false);
        let from = rows_from_gguf(Change::Rope { heads }, rows);
        assert_eq!(undone, from.iter().map(|&g| gguf[g]).collect::<Vec<_>>());
        assert_eq!(rows_from_gguf(Change::Transpose, 3), vec![0, 1, 2]);
    }
}
