//! Reading a model's weights from safetensors files: lmforge's own
//! `model.safetensors`, or a Hugging Face `save_pretrained` folder, whose
//! weights may be split over several files (`model.safetensors.index.json`
//! maps each tensor name to its file) and stored in `F16` or `BF16`.
//!
//! Files are memory-mapped, so a 6 GB checkpoint is read once into the
//! parameter buffer and never held twice. Half-precision values widen to
//! `f32` exactly (every f16 and bf16 value is an f32 value).
//!
//! Names: lmforge writes `GPT2LMHeadModel` names (`transformer.h.0...`, or
//! `LlamaForCausalLM`'s `model.layers.0...` for a Llama-family model);
//! a bare `GPT2Model` file has the same names without `transformer.`. Two
//! kinds of extra tensor are skipped: the causal-mask buffers older
//! `transformers` versions saved (`attn.bias`, `attn.masked_bias`; a
//! Llama's `rotary_emb.inv_freq`, recomputed from the config), and
//! `lm_head.weight` in a tied model (a copy of the token embedding). Zero
//! biases lmforge writes for biases a model lacks are skipped too. Any other
//! tensor the model has no place for is an error: it means a different
//! architecture, and ignoring it would give a silently wrong model. Every
//! tensor must have the shape the config gives it (the right number of values
//! laid out another way, `wte` as `[n_embd, vocab_size]`, is an error naming
//! it, not a model that samples garbage).

use super::integrity;
use crate::error::{Error, Result};
use crate::model::Model;
use safetensors::SafeTensors;
use safetensors::tensor::Dtype;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// The safetensors files of the model in `dir`: `model.safetensors`, or the
/// shards its index names.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join(super::MODEL_FILE);
    if single.exists() {
        return Ok(vec![single]);
    }
    let index_path = dir.join(INDEX_FILE);
    if !index_path.exists() {
        return Err(missing_weights(dir));
    }
    let text = std::fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
    let index: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::format(&index_path, e.to_string()))?;
    let map = index["weight_map"]
        .as_object()
        .ok_or_else(|| Error::format(&index_path, "\"weight_map\" is missing or not an object"))?;
    let mut files: Vec<String> = Vec::new();
    for (name, file) in map {
        let file = file
            .as_str()
            .filter(|f| is_plain_file_name(f))
            .ok_or_else(|| {
                Error::format(
                    &index_path,
                    format!("tensor {name:?} maps to {file}, not a file name in this folder"),
                )
            })?;
        if !files.iter().any(|f| f == file) {
            files.push(file.to_string());
        }
    }
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

/// A shard name must stay inside the folder (the index is untrusted).
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && !name.contains(['/', '\\']) && name != "." && name != ".."
}

fn missing_weights(dir: &Path) -> Error {
    let pickle = ["pytorch_model.bin", "pytorch_model.bin.index.json"]
        .iter()
        .any(|f| dir.join(f).exists());
    let message = if pickle {
        "holds only PyTorch pickle weights (pytorch_model.bin), which lmforge does not read \
         (unpickling runs code). Convert them once with Python: \
         `from transformers import AutoModelForCausalLM; \
         AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)`"
    } else {
        "has no model.safetensors or model.safetensors.index.json"
    };
    Error::format(dir, message)
}

/// Widen IEEE half-precision bits to `f32` (subnormals, infinities and NaN included).
fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let frac = (h & 0x3ff) as u32;
    let bits = match (exp, frac) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: value = frac * 2^-24, exact in f32.
            let value = frac as f32 * f32::from_bits(0x3380_0000);
            return if sign != 0 { -value } else { value };
        }
        (0x1f, _) => sign | 0x7f80_0000 | (frac << 13),
        _ => sign | ((exp + 112) << 23) | (frac << 13),
    };
    f32::from_bits(bits)
}

/// Write a tensor's values into `dst` as `f32`, whatever float type it is stored in.
fn widen(dtype: Dtype, data: &[u8], dst: &mut [f32]) -> std::result::Result<(), String> {
    let width = match dtype {
        Dtype::F32 => 4,
        Dtype::F16 | Dtype::BF16 => 2,
        other => return Err(format!("is {other:?}; lmforge reads F32, F16 and BF16")),
    };
    if data.len() != dst.len() * width {
        return Err(format!(
            "holds {} values, the model expects {}",
            data.len() / width,
            dst.len()
        ));
    }
    match dtype {
        Dtype::F32 => {
            for (d, b) in dst.iter_mut().zip(data.chunks_exact(4)) {
                *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Dtype::F16 => {
            for (d, b) in dst.iter_mut().zip(data.chunks_exact(2)) {
                *d = f16_to_f32(u16::from_le_bytes([b[0], b[1]]));
            }
        }
        _ => {
            for (d, b) in dst.iter_mut().zip(data.chunks_exact(2)) {
                *d = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
            }
        }
    }
    Ok(())
}

/// Tensors the model need not have a place for (see the module doc).
fn skippable(name: &str, model: &Model) -> bool {
    name.ends_with(".attn.bias")
        || name.ends_with(".attn.masked_bias")
        || name.ends_with(".rotary_emb.inv_freq")
        || (name == "lm_head.weight" && model.config.tie_embeddings)
        || super::absent_biases(&model.config)
            .iter()
            .any(|(absent, _)| absent == name || absent.strip_prefix("transformer.") == Some(name))
}

/// Refuse a config naming a far larger model than the weight files can
/// hold (at least 2 bytes a parameter), before anything is laid out or allocated.
pub fn check_size(dir: &Path, config: &crate::model::ModelConfig) -> Result<()> {
    let files = weight_files(dir)?;
    let mut bytes = 0u64;
    for path in &files {
        bytes += std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
    }
    let params = crate::memory::param_count(config)? as u64;
    if params.saturating_mul(2) > bytes {
        return Err(Error::format(
            named_file(dir, &files),
            format!(
                "the weights hold {bytes} bytes, too few for the {params} parameters of \
                 config.json: the files do not belong together"
            ),
        ));
    }
    Ok(())
}

/// The model's parameters, read from the weight files in `dir`.
pub fn load_params(dir: &Path, model: &Model) -> Result<Vec<f32>> {
    let mut params = vec![0.0f32; model.num_params()];
    crate::huge_pages::advise(&params);
    let mut filled: HashSet<&str> = HashSet::new();
    let by_name: BTreeMap<&str, &crate::model::TensorSpec> = model
        .layout
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    TensorFiles::open(dir)?.each(|path, name, view| {
        let ours = by_name
            .get(name)
            .or_else(|| by_name.get(format!("transformer.{name}").as_str()));
        let Some(spec) = ours else {
            if skippable(name, model) {
                return Ok(());
            }
            return Err(Error::format(
                path,
                format!(
                    "tensor {name:?} has no place in this model (a GPT-2 of {} layers): \
                     the file is of another architecture or size",
                    model.config.n_layer
                ),
            ));
        };
        if view.shape() != spec.shape.as_slice() {
            return Err(Error::format(
                path,
                format!(
                    "tensor {name:?} has shape {:?}; config.json makes it {:?}: the weights \
                     and the config do not belong together",
                    view.shape(),
                    spec.shape
                ),
            ));
        }
        let dst = &mut params[spec.range.clone()];
        widen(view.dtype(), view.data(), dst)
            .map_err(|e| Error::format(path, format!("tensor {name:?} {e}")))?;
        integrity::check_finite(dst, &spec.name, path)?;
        filled.insert(spec.name.as_str());
        Ok(())
    })?;
    if let Some(missing) = model
        .layout
        .tensors
        .iter()
        .find(|t| !filled.contains(t.name.as_str()))
    {
        return Err(missing_tensor(dir, &missing.name));
    }
    Ok(params)
}

/// The file to name for the weights in `dir` as a whole: the one
/// safetensors file, or the index of the shards.
fn named_file(dir: &Path, files: &[PathBuf]) -> PathBuf {
    match files {
        [one] => one.clone(),
        _ => dir.join(INDEX_FILE),
    }
}

/// The error for a tensor that `config.json` asks for and no weight file holds.
pub fn missing_tensor(dir: &Path, name: &str) -> Error {
    let named = weight_files(dir)
        .map(|files| named_file(dir, &files))
        .unwrap_or_else(|_| dir.to_path_buf());
    Error::format(
        named,
        format!(
            "the weights have no tensor {name:?}, which config.json asks for: the \
             weights and the config do not belong together"
        ),
    )
}

/// Let the kernel drop a map's pages from memory once read: they are the
/// file's (read again from disk if touched), and would otherwise count in
/// the process's memory beside the copy just made of them.
fn release(map: &memmap2::Mmap) {
    // SAFETY: a read-only, shared file mapping: dropped pages are re-read
    // from the file on the next access, so no value seen through it changes.
    let _ = unsafe { map.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
}

/// The safetensors file mapped at `map`.
fn parse<'m>(path: &Path, map: &'m memmap2::Mmap) -> Result<SafeTensors<'m>> {
    SafeTensors::deserialize(map)
        .map_err(|e| Error::format(path, format!("not a valid safetensors file: {e}")))
}

/// The weight files of a model folder, memory-mapped and checksum-verified,
/// read one tensor at a time (a fine-tune copies a large parent into its
/// own layout this way, without holding the parent's weights a second time)
/// or all at once ([`load_params`]).
pub struct TensorFiles {
    maps: Vec<(PathBuf, memmap2::Mmap)>,
}

impl TensorFiles {
    pub fn open(dir: &Path) -> Result<Self> {
        let mut maps = Vec::new();
        for path in weight_files(dir)? {
            let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
            // SAFETY: the map is only read; a file truncated underneath would
            // fault, as reading any mmap would.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
            let st = parse(&path, &map)?;
            let (_, meta) = SafeTensors::read_metadata(&map)
                .map_err(|e| Error::format(&path, e.to_string()))?;
            integrity::verify(&st, &meta.metadata().clone().unwrap_or_default(), &path)?;
            drop(st);
            release(&map);
            maps.push((path, map));
        }
        Ok(TensorFiles { maps })
    }

    /// Call `f` with every tensor of every file (and the file's path).
    pub fn each(
        &self,
        mut f: impl FnMut(&Path, &str, safetensors::tensor::TensorView) -> Result<()>,
    ) -> Result<()> {
        for (path, map) in &self.maps {
            for (name, view) in parse(path, map)?.tensors() {
                f(path, &name, view)?;
            }
            release(map);
        }
        Ok(())
    }

    /// The tensor `name` (or its bare `GPT2Model` name), widened to `f32`:
    /// its shape and values, or `None` if no file holds it.
    pub fn read(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        let bare = name.strip_prefix("transformer.");
        for (path, map) in &self.maps {
            let st = parse(path, map)?;
            let found = st
                .tensor(name)
                .or_else(|e| bare.map_or(Err(e), |b| st.tensor(b)));
            if let Ok(view) = found {
                let mut values = vec![0.0f32; view.shape().iter().product()];
                widen(view.dtype(), view.data(), &mut values)
                    .map_err(|e| Error::format(path, format!("tensor {name:?} {e}")))?;
                integrity::check_finite(&values, name, path)?;
                let shape = view.shape().to_vec();
                release(map);
                return Ok(Some((shape, values)));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_precision_widens_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert!(f16_to_f32(0x7c00).is_infinite() && f16_to_f32(0x7e00).is_nan());
        let mut out = [0.0f32; 2];
        widen(Dtype::BF16, &[0x80, 0x3f, 0x40, 0xc0], &mut out).unwrap();
        assert_eq!(out, [1.0, -3.0]);
        let err = widen(Dtype::I64, &[0; 16], &mut out).unwrap_err();
        assert!(err.contains("I64"), "{err}");
        assert!(
            widen(Dtype::F16, &[0; 2], &mut out).is_err(),
            "short data refused"
        );
    }

    #[test]
    fn shard_names_cannot_leave_the_folder() {
        assert!(is_plain_file_name("model-00001-of-00002.safetensors"));
        for bad in ["", "..", "../x.safetensors", "/etc/passwd", "a\\b"] {
            assert!(!is_plain_file_name(bad), "{bad:?}");
        }
    }
}
