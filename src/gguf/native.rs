//! A GGUF file's weights loaded for decoding with no f32 copy of its
//! matrices: each matrix goes from the mapped file straight into its packed
//! form ([`PackedWeights`]), one at a time.
//!
//! A matrix of lmforge is made of GGUF tensors' rows: ggml stores a weight as
//! `OUT` rows of `IN` values (GPT-2's `Conv1D` weights already transposed so),
//! lmforge's fused `c_attn` is the rows of `attn_q`, `attn_k` and `attn_v`
//! one after the other (GPT-2's `attn_qkv` is one tensor), `c_fc` those of
//! `ffn_gate` and `ffn_up`, and a `llama` file's `q`/`k` rows are in the
//! rotary order of [`super::family`] (a permutation of whole rows). Rows are
//! whole blocks, so a tensor stored in the type wanted has its blocks copied
//! in lmforge's row order and handed to [`Backend::pack_blocks`]: the same
//! bytes, bit for bit. A tensor in another type (F32, F16, a K-quant, or
//! q8_0 wanted of a q4_0 file) is dequantized alone to f32 and packed
//! ([`Backend::pack`]). Norms, biases and position embeddings are read into
//! an f32 buffer allocated zeroed, whose matrices' pages are never touched.

use super::family::{self, Change};
use super::file::{GgufFile, TensorInfo};
use super::quant::{GgmlType, dequantize};
use crate::backend::{Backend, Mat, WeightType};
use crate::checkpoint::integrity::check_finite;
use crate::error::{Error, Result};
use crate::model::packed::{Matrix, matrices};
use crate::model::{Model, PackedWeights, TensorSpec};
use std::path::Path;

/// The type a file's matrices are kept in when `--weights` is not given, decided
/// per file by the type most of the matrices' values are stored in: that type
/// where lmforge computes in it (Q8_0, Q4_0, BF16), f32 for F32 and F16, and
/// q8_0 for the K-quants (lmforge has no K-quant kernels). Tensors of another
/// type (a q4_0 file's Q6_K head) are converted to the file's type. A model
/// with a matrix whose rows are not whole blocks of that type (lmforge's
/// export writes such a matrix in F16) stays f32, as before.
pub fn default_type(file: &GgufFile, model: &Model, arch: &str) -> Result<WeightType> {
    if model.config.arch == crate::model::Arch::Bigram {
        return Ok(WeightType::F32);
    }
    let all = matrices(model)?;
    let mut counts: Vec<(GgmlType, u64)> = Vec::new();
    for m in &all {
        for t in parts(model, m) {
            if let Some(info) = gguf_tensor(file, model, arch, t).ok().map(|(i, _)| i) {
                match counts.iter_mut().find(|(ty, _)| *ty == info.ty) {
                    Some((_, n)) => *n += info.len(),
                    None => counts.push((info.ty, info.len())),
                }
            }
        }
    }
    let most = counts.iter().max_by_key(|(_, n)| *n).map(|(ty, _)| *ty);
    let ty = match most {
        Some(GgmlType::Q8_0 | GgmlType::Q4K | GgmlType::Q6K) => WeightType::Q8_0,
        Some(GgmlType::Q4_0) => WeightType::Q4_0,
        Some(GgmlType::BF16) => WeightType::Bf16,
        _ => WeightType::F32,
    };
    let whole_blocks = all.iter().all(|m| m.linear.fan_in % ty.block_len() == 0);
    Ok(if whole_blocks { ty } else { WeightType::F32 })
}

/// The model's weights from `file` (at `path`): the f32 buffer holding all
/// but the matrices, and the matrices packed as `ty`. `release` gets each
/// tensor's bytes in the file as soon as they are read.
pub fn load<B: Backend>(
    be: &B,
    file: &GgufFile,
    path: &Path,
    model: &Model,
    ty: WeightType,
    release: &dyn Fn(&[u8]),
) -> Result<(Vec<f32>, PackedWeights<B>)> {
    let arch = arch_of(file);
    let packed_here = matrices(model)?;
    let mut host = vec![0.0f32; model.num_params()];
    for t in &model.layout.tensors {
        if !packed_here.iter().any(|m| inside(t, m)) {
            let (info, change) = gguf_tensor(file, model, &arch, t).map_err(|e| bad(path, e))?;
            let out = &mut host[t.range.clone()];
            super::read_tensor_into(file, info, change, &t.shape, out, path, release)?;
        }
    }
    let packed = PackedWeights::build(model, ty, |m| {
        let mut parts_of = Vec::new();
        for t in parts(model, m) {
            let (info, change) = gguf_tensor(file, model, &arch, t).map_err(|e| bad(path, e))?;
            parts_of.push((info, change));
        }
        if parts_of.iter().all(|(info, _)| info.ty == ty_ggml(ty)) {
            let bytes = blocks(file, path, &parts_of, release)?;
            be.pack_blocks(ty, (m.linear.fan_in, m.linear.fan_out), &bytes)
        } else {
            let values = rows_f32(file, path, &parts_of, release)?;
            let staging = be.upload(values)?;
            let n = m.linear.weight.len();
            let view = B::view(&staging, 0..n);
            be.pack(Mat::new(view, m.linear.fan_out, m.linear.fan_in).t(), ty)
        }
    })?;
    Ok((host, packed))
}

/// `general.architecture` (empty when absent: [`family::config`] refuses that).
pub fn arch_of(file: &GgufFile) -> String {
    file.get("general.architecture")
        .and_then(super::file::Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn bad(path: &Path, message: String) -> Error {
    Error::format(path, message)
}

fn inside(t: &TensorSpec, m: &Matrix) -> bool {
    t.range.start >= m.linear.weight.start && t.range.end <= m.linear.weight.end
}

/// The model tensors matrix `m` is made of, in their order in the buffer.
fn parts<'m>(model: &'m Model, m: &Matrix) -> Vec<&'m TensorSpec> {
    let mut parts: Vec<_> = (model.layout.tensors.iter())
        .filter(|t| inside(t, m))
        .collect();
    parts.sort_by_key(|t| t.range.start);
    parts
}

/// The GGUF tensor of model tensor `t`, checked against its shape.
fn gguf_tensor<'f>(
    file: &'f GgufFile,
    model: &Model,
    arch: &str,
    t: &TensorSpec,
) -> std::result::Result<(&'f TensorInfo, Change), String> {
    let (name, change) = family::gguf_name(&model.config, arch, &t.name)
        .ok_or_else(|| format!("tensor {:?} has no GGUF name", t.name))?;
    let info = (file.tensor(&name)).ok_or_else(|| format!("tensor {name:?} is missing"))?;
    let expected = super::gguf_shape(&t.shape, change);
    if info.shape() != expected {
        return Err(format!(
            "tensor {name:?} has shape {:?}, expected {expected:?}",
            info.shape()
        ));
    }
    Ok((info, change))
}

/// The GGUF element type whose blocks are `ty`'s.
fn ty_ggml(ty: WeightType) -> GgmlType {
    match ty {
        WeightType::F32 => GgmlType::F32,
        WeightType::Bf16 => GgmlType::BF16,
        WeightType::Q8_0 => GgmlType::Q8_0,
        WeightType::Q4_0 => GgmlType::Q4_0,
    }
}

/// `(rows, cols)` of a 1- or 2-dimensional GGUF tensor (`ne[1]`, `ne[0]`).
fn rows_cols(info: &TensorInfo) -> (usize, usize) {
    let cols = info.dims.first().copied().unwrap_or(1) as usize;
    let rows = info.dims.get(1).copied().unwrap_or(1) as usize;
    (rows, cols)
}

/// The parts' rows of blocks, one after the other in lmforge's row order,
/// each tensor checked to hold finite values and its file pages released.
fn blocks(
    file: &GgufFile,
    path: &Path,
    parts: &[(&TensorInfo, Change)],
    release: &dyn Fn(&[u8]),
) -> Result<Vec<u8>> {
    let total = parts
        .iter()
        .map(|(info, _)| file.tensor_bytes(info).len())
        .sum();
    let mut out = Vec::with_capacity(total);
    for (info, change) in parts {
        let (rows, cols) = rows_cols(info);
        let bytes = file.tensor_bytes(info);
        let row_bytes = bytes.len() / rows.max(1);
        if cols % info.ty.block_len() != 0 || row_bytes * rows != bytes.len() {
            return Err(bad(
                path,
                format!("tensor {:?}: its rows are not whole blocks", info.name),
            ));
        }
        for g in family::rows_from_gguf(*change, rows) {
            let row = &bytes[g * row_bytes..(g + 1) * row_bytes];
            check_finite(&dequantize(info.ty, row), &info.name, path)?;
            out.extend_from_slice(row);
        }
        release(bytes);
    }
    Ok(out)
}

/// The parts' rows dequantized to f32, one after the other in lmforge's row order
/// (each tensor's file pages released once read).
fn rows_f32(
    file: &GgufFile,
    path: &Path,
    parts: &[(&TensorInfo, Change)],
    release: &dyn Fn(&[u8]),
) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for (info, change) in parts {
        let (rows, cols) = rows_cols(info);
        let values = file.tensor_f32(info);
        release(file.tensor_bytes(info));
        check_finite(&values, &info.name, path)?;
        for g in family::rows_from_gguf(*change, rows) {
            out.extend_from_slice(&values[g * cols..(g + 1) * cols]);
        }
    }
    Ok(out)
}
