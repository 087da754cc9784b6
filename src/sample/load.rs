//! A run's weights loaded for decoding with `--weights f32|bf16|q8_0|q4_0`.
//!
//! With f32 the parameters load as always (one flat buffer). With another
//! type the matrices go straight from the weight files into their packed
//! form ([`PackedWeights`]), one matrix at a time, and never into the flat
//! buffer: that buffer is allocated zeroed (`vec![0.0; n]`, which the
//! allocator takes from the OS as untouched pages) and only the tensors
//! that stay f32 (norms, biases, position embeddings) are written into it,
//! so the pages of the matrices' ranges are never mapped. The process then
//! holds the packed bytes plus at most one matrix in f32 while it loads
//! (`/usr/bin/time -v` shows the peak; the book's `quantized.md` lists them).
//! A directory [`crate::gguf::open_run`] made of a `.gguf` file has its
//! weights read from the file instead: its tensors in f32
//! ([`crate::gguf::load_f32`]), or its matrices' own blocks
//! ([`crate::gguf::native`]).

use crate::backend::{Backend, WeightType};
use crate::checkpoint::{self, weights::TensorFiles};
use crate::error::{Error, Result};
use crate::model::packed::{Matrix, matrices};
use crate::model::{Model, PackedWeights, TensorSpec, Weights};
use std::path::Path;

/// A model's weights on a backend: the flat parameters, and the packed
/// matrices that take the place of their ranges there (`--weights` not f32).
pub struct LoadedWeights<B: Backend> {
    pub params: B::Buf,
    pub packed: Option<PackedWeights<B>>,
}

impl<B: Backend> LoadedWeights<B> {
    /// What the decoding functions read.
    pub fn weights(&self) -> Weights<'_, B> {
        Weights::packed(&self.params, self.packed.as_ref())
    }
}

/// The type `--weights` means for the run in `dir`: `wanted`, else the one
/// [`crate::gguf::open_run`] chose for a `.gguf` file, else f32.
pub fn resolve(dir: &Path, wanted: Option<WeightType>) -> Result<WeightType> {
    match wanted {
        Some(ty) => Ok(ty),
        None => Ok(crate::gguf::source(dir)?.map_or(WeightType::F32, |(_, ty)| ty)),
    }
}

/// The model of the run in `dir` and its f32 weights: from the run's weight
/// files (LoRA adapters merged), or from the GGUF file [`crate::gguf::open_run`]
/// noted there.
pub fn load_f32(dir: &Path) -> Result<(Model, Vec<f32>)> {
    match crate::gguf::source(dir)? {
        Some((gguf, _)) => {
            let model = Model::new(checkpoint::load_config(dir)?)?;
            let params = crate::gguf::load_f32(&gguf, &model)?;
            Ok((model, params))
        }
        None => crate::finetune::load_run(dir),
    }
}

/// The weights of the run in `dir` (whose model is `model`) as `ty`.
pub fn load_weights<B: Backend>(
    be: &B,
    dir: &Path,
    model: &Model,
    ty: WeightType,
) -> Result<LoadedWeights<B>> {
    if ty == WeightType::F32 {
        let (_, params) = load_f32(dir)?;
        let params = be.upload(params)?;
        return Ok(LoadedWeights {
            params,
            packed: None,
        });
    }
    if dir
        .join(crate::finetune::adapters::ADAPTER_CONFIG_FILE)
        .exists()
    {
        return Err(Error::Weights(format!(
            "--weights {}: {} is a LoRA run; merge its adapters first (lmforge merge-lora)",
            ty.name(),
            dir.display()
        )));
    }
    if let Some((gguf, _)) = crate::gguf::source(dir)? {
        let (host, packed) = crate::gguf::load_packed(be, &gguf, model, ty)?;
        return Ok(LoadedWeights {
            params: be.upload(host)?,
            packed: Some(packed),
        });
    }
    checkpoint::weights::check_size(dir, &model.config)?;
    let files = TensorFiles::open(dir)?;
    let packed_here = matrices(model)?;
    let inside = |t: &TensorSpec, m: &Matrix| {
        t.range.start >= m.linear.weight.start && t.range.end <= m.linear.weight.end
    };
    let mut host = vec![0.0f32; model.num_params()];
    for t in &model.layout.tensors {
        if !packed_here.iter().any(|m| inside(t, m)) {
            read_into(&files, dir, t, &mut host[t.range.clone()])?;
        }
    }
    let packed = PackedWeights::build(model, ty, |m| {
        let start = m.linear.weight.start;
        let mut staging = vec![0.0f32; m.linear.weight.len()];
        for t in model.layout.tensors.iter().filter(|t| inside(t, m)) {
            let at = t.range.start - start..t.range.end - start;
            read_into(&files, dir, t, &mut staging[at])?;
        }
        let staging = be.upload(staging)?;
        let view = B::view(&staging, 0..m.linear.weight.len());
        be.pack(m.linear.weight_mat::<B>(view), ty)
    })?;
    Ok(LoadedWeights {
        params: be.upload(host)?,
        packed: Some(packed),
    })
}

/// Tensor `t` from the weight files, checked against its shape, into `dst`.
fn read_into(files: &TensorFiles, dir: &Path, t: &TensorSpec, dst: &mut [f32]) -> Result<()> {
    let Some((shape, values)) = files.read(&t.name)? else {
        return Err(checkpoint::weights::missing_tensor(dir, &t.name));
    };
    if shape != t.shape {
        return Err(Error::format(
            dir,
            format!(
                "tensor {:?} has shape {shape:?}; config.json makes it {:?}: the weights \
                 and the config do not belong together",
                t.name, t.shape
            ),
        ));
    }
    dst.copy_from_slice(&values);
    Ok(())
}
