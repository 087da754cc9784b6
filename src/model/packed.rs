//! A model's matrices kept in a [`WeightType`] other than f32: for decoding
//! (`--weights`), and for training's forward products when the backend asks
//! for a copy ([`PackedWeights::for_training`]: the CPU's `--dtype bf16`).
//!
//! Every linear layer's weight (the fused `c_attn` and `c_fc` included), the
//! LM head and the token embedding are packed by the backend
//! ([`Backend::pack`], or [`Backend::pack_blocks`] for a GGUF tensor's
//! bytes); norms, biases and position embeddings stay in the f32 parameter
//! buffer. [`crate::model::layers`] looks each weight up here by where it
//! sits in that buffer, and runs [`Backend::matmul_packed`] when it is found.
//! A tied LM head is the token embedding: one packed `(C, V)` matrix serves
//! both the head's product and the embedding's rows ([`Backend::packed_rows`]).
//!
//! The f32 buffer never needs the packed ranges: a loader fills only the
//! tensors [`PackedWeights::is_packed`] leaves out, so the matrices' pages of
//! a buffer allocated zeroed are never touched (the OS maps them on first
//! write only) and the model costs its packed bytes, not an f32 copy.

use super::params::{LinearParams, ParamLayout, WeightLayout};
use super::{Arch, Model};
use crate::backend::{Backend, Mat, WeightType};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::ops::Range;

/// The packed matrices of one model, keyed by where each sits in the flat buffer.
pub struct PackedWeights<B: Backend> {
    ty: WeightType,
    by_start: HashMap<usize, B::Packed>,
    /// A training copy's matrices, rewritten from the f32 masters by
    /// [`PackedWeights::refresh`] (none for decoding: packed once).
    sources: Vec<LinearParams>,
    /// Whether the token embedding's rows are read from here (decoding) or
    /// from the f32 buffer (training: an embedding is no product, and stays
    /// f32 as under PyTorch's autocast).
    embedding_rows: bool,
}

/// One matrix to pack: its name, range and shape.
pub struct Matrix {
    pub name: String,
    pub linear: LinearParams,
}

impl<B: Backend> PackedWeights<B> {
    /// Every matrix of `model` packed as `ty` from the f32 `params`.
    pub fn from_params(be: &B, model: &Model, params: &B::Buf, ty: WeightType) -> Result<Self> {
        PackedWeights::build(model, ty, |m| {
            be.pack(weight_in::<B>(params, &m.linear), ty)
        })
    }

    /// Every matrix of `model` (see [`matrices`]) packed by `pack`, which
    /// gets each in turn (and whose errors are given the matrix's name).
    pub fn build(
        model: &Model,
        ty: WeightType,
        pack: impl FnMut(&Matrix) -> Result<B::Packed>,
    ) -> Result<Self> {
        if ty == WeightType::F32 {
            return Err(Error::Weights(
                "f32 weights are not packed: they stay in the parameter buffer".into(),
            ));
        }
        if model.config.lora.is_some() {
            return Err(Error::Weights(format!(
                "--weights {} needs the adapters merged first (lmforge merge-lora)",
                ty.name()
            )));
        }
        Ok(PackedWeights {
            ty,
            by_start: pack_each::<B>(&matrices(model)?, pack)?,
            sources: Vec::new(),
            embedding_rows: true,
        })
    }

    /// Training's copy of the matrices its forward products read, in the
    /// type `be` asks for ([`Backend::training_weights`]); the f32 buffer
    /// stays the master that AdamW updates, and [`PackedWeights::refresh`]
    /// rewrites the copy after each update. `None` when the backend asks for
    /// none, for the bigram model (no products) and with LoRA (whose
    /// effective weights are formed afresh at each product). Holds the
    /// blocks' matrices and the LM head (the token embedding only when it is
    /// the tied head).
    pub fn for_training(be: &B, model: &Model, params: &B::Buf) -> Result<Option<Self>> {
        let Some(ty) = be.training_weights() else {
            return Ok(None);
        };
        if model.config.arch == Arch::Bigram || model.config.lora.is_some() {
            return Ok(None);
        }
        let lay = &model.layout;
        let tied = lay.lm_head.as_ref().is_some_and(|h| h.weight == lay.wte);
        let list: Vec<Matrix> = matrices(model)?
            .into_iter()
            .filter(|m| tied || m.linear.weight != lay.wte)
            .collect();
        let by_start = pack_each::<B>(&list, |m| be.pack(weight_in::<B>(params, &m.linear), ty))?;
        Ok(Some(PackedWeights {
            ty,
            by_start,
            sources: list.into_iter().map(|m| m.linear).collect(),
            embedding_rows: false,
        }))
    }

    /// Rewrite a training copy from the f32 `params` (after an update),
    /// allocating nothing.
    pub fn refresh(&mut self, be: &B, params: &B::Buf) -> Result<()> {
        for linear in &self.sources {
            if let Some(packed) = self.by_start.get_mut(&linear.weight.start) {
                be.repack(packed, weight_in::<B>(params, linear))?;
            }
        }
        Ok(())
    }

    pub fn ty(&self) -> WeightType {
        self.ty
    }

    /// The packed matrix stored at `weight`, if it is one.
    pub fn get(&self, weight: &Range<usize>) -> Option<&B::Packed> {
        self.by_start.get(&weight.start)
    }

    /// The packed token embedding `wte`, when its rows are read from here
    /// (decoding; a training copy leaves the embedding f32).
    pub fn embedding_table(&self, wte: &Range<usize>) -> Option<&B::Packed> {
        self.get(wte).filter(|_| self.embedding_rows)
    }
}

/// `linear`'s weight in `params`, as the `(IN, OUT)` matrix the backend packs.
fn weight_in<'p, B: Backend>(params: &'p B::Buf, linear: &LinearParams) -> Mat<B::View<'p>> {
    linear.weight_mat::<B>(B::view(params, linear.weight.clone()))
}

/// Each matrix of `list` packed by `pack` (its errors given the matrix's
/// name), keyed by where it starts in the flat buffer.
fn pack_each<B: Backend>(
    list: &[Matrix],
    mut pack: impl FnMut(&Matrix) -> Result<B::Packed>,
) -> Result<HashMap<usize, B::Packed>> {
    let mut by_start = HashMap::new();
    for m in list {
        let packed = pack(m).map_err(|e| Error::Weights(format!("{}: {e}", m.name)))?;
        by_start.insert(m.linear.weight.start, packed);
    }
    Ok(by_start)
}

/// Whether the tensor at `range` is one [`PackedWeights`] holds for `model`
/// (a loader leaves those out of the f32 buffer).
pub fn is_packed(model: &Model, range: &Range<usize>) -> bool {
    matrices(model)
        .map(|ms| ms.iter().any(|m| m.linear.weight.start == range.start))
        .unwrap_or(false)
}

/// The matrices a packed model keeps packed, each once: the token embedding
/// (as the `(C, V)` weight of a tied head), every block's linear layers, and
/// an untied LM head. The bigram table has none worth packing: refused.
pub fn matrices(model: &Model) -> Result<Vec<Matrix>> {
    if model.config.arch == Arch::Bigram {
        return Err(Error::Weights(
            "the bigram model keeps its one table in f32".into(),
        ));
    }
    let lay = &model.layout;
    let name = |range: &Range<usize>| name_at(lay, range);
    let wte = LinearParams {
        weight: lay.wte.clone(),
        bias: None,
        fan_in: model.config.n_embd,
        fan_out: model.config.vocab_size,
        layout: WeightLayout::OutIn,
        lora: Vec::new(),
    };
    let mut all = vec![wte];
    for b in &lay.blocks {
        all.extend([&b.c_attn, &b.attn_proj, &b.c_fc, &b.mlp_proj].map(|l| l.clone()));
    }
    all.extend(lay.lm_head.iter().filter(|h| h.weight != lay.wte).cloned());
    Ok(all
        .into_iter()
        .map(|linear| Matrix {
            name: name(&linear.weight),
            linear,
        })
        .collect())
}

/// The name of the tensor starting at `range` (a fused layer: its first part's).
fn name_at(lay: &ParamLayout, range: &Range<usize>) -> String {
    lay.tensors
        .iter()
        .find(|t| t.range.start == range.start)
        .map(|t| t.name.clone())
        .unwrap_or_else(|| format!("parameters {range:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;
    use crate::model::{
        Activation, Activations, LlamaConfig, Mode, ModelConfig, Norm, Weights, Window,
    };
    use crate::rng::Rng;

    fn gpt() -> ModelConfig {
        ModelConfig {
            arch: Arch::Gpt,
            vocab_size: 50,
            block_size: 8,
            n_layer: 2,
            n_head: 2,
            n_embd: 64,
            dropout: 0.0,
            norm: Norm::Pre,
            activation: Activation::Gelu,
            tie_embeddings: true,
            bias: true,
            qkv_bias: false,
            lm_head_bias: false,
            llama: None,
            lora: None,
        }
    }

    fn llama() -> ModelConfig {
        ModelConfig {
            arch: Arch::Llama,
            n_head: 4,
            bias: false,
            activation: Activation::Silu,
            tie_embeddings: false,
            llama: Some(LlamaConfig {
                n_kv_head: 2,
                intermediate_size: 96,
                rope_theta: 10_000.0,
                rope_scaling: Default::default(),
                rms_norm_eps: 1e-6,
            }),
            ..gpt()
        }
    }

    /// The last position's logits of `tokens`, decoded from a cache.
    fn logits(model: &Model, params: &Vec<f32>, packed: Option<&PackedWeights<Cpu>>) -> Vec<f32> {
        let be = Cpu::new();
        let tokens = [3, 14, 15, 9, 2, 6];
        let mut acts = Activations::inference(&be, &model.config).unwrap();
        let weights = Weights::packed(params, packed);
        let (prompt, rest) = tokens.split_at(4);
        model.forward_with(
            &be,
            weights,
            &mut acts,
            prompt,
            Window::continuing(0, 4),
            Mode::Eval,
        );
        for (i, t) in rest.iter().enumerate() {
            let w = Window::continuing(4 + i, 1);
            model.forward_with(&be, weights, &mut acts, &[*t], w, Mode::Eval);
        }
        acts.logits_row(0).to_vec()
    }

    /// Packed models decode the f32 model's logits, within each type's
    /// rounding: the worst difference relative to the logits' spread.
    #[test]
    fn packed_models_decode_close_to_f32() {
        let be = Cpu::new();
        for cfg in [gpt(), llama()] {
            let model = Model::new(cfg).unwrap();
            let mut rng = Rng::new(3, 0);
            let params: Vec<f32> = (0..model.num_params())
                .map(|_| rng.next_f32() - 0.5)
                .collect();
            let want = logits(&model, &params, None);
            let spread = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (ty, tol) in [
                (WeightType::Bf16, 0.02),
                (WeightType::Q8_0, 0.03),
                (WeightType::Q4_0, 0.4),
            ] {
                let packed = PackedWeights::from_params(&be, &model, &params, ty).unwrap();
                let got = logits(&model, &params, Some(&packed));
                let worst = got
                    .iter()
                    .zip(&want)
                    .fold(0f32, |m, (g, w)| m.max((g - w).abs()));
                eprintln!(
                    "{:?} {}: worst {worst} of spread {spread}",
                    model.config.arch,
                    ty.name()
                );
                assert!(
                    worst <= tol * spread,
                    "{:?} {}: {worst} vs {spread}",
                    model.config.arch,
                    ty.name()
                );
                // The packed matrices were read, not the f32 buffer's: zeroing
                // those ranges changes nothing.
                let mut holes = params.clone();
                for m in matrices(&model).unwrap() {
                    holes[m.linear.weight.clone()].fill(0.0);
                }
                assert!(
                    logits(&model, &holes, Some(&packed)) == got,
                    "{}: read the f32 buffer",
                    ty.name()
                );
            }
        }
    }

    /// Training's bf16 copy holds the blocks' matrices and the LM head, and
    /// the token embedding only as a tied head (read by the product, never
    /// for the embedding's rows): a forward through it is, bit for bit, the
    /// forward that converts the f32 masters at each product.
    #[test]
    fn a_training_copy_changes_no_bit_of_the_forward() {
        use crate::backend::cpu::Dtype;
        let be = Cpu::with_dtype(Dtype::Bf16);
        let (b, t) = (2, 8);
        let window = Window::batch(b, t);
        let tokens: Vec<u32> = (0..16).map(|i| i * 7 % 50).collect();
        for cfg in [gpt(), llama()] {
            let model = Model::new(cfg).unwrap();
            let mut rng = Rng::new(5, 0);
            let params: Vec<f32> = (0..model.num_params())
                .map(|_| rng.next_f32() - 0.5)
                .collect();
            let copy = PackedWeights::for_training(&be, &model, &params)
                .unwrap()
                .unwrap();
            let lay = &model.layout;
            let head = lay.lm_head.as_ref().unwrap();
            assert!(copy.get(&head.weight).is_some());
            assert!(copy.embedding_table(&lay.wte).is_none());
            assert_eq!(copy.get(&lay.wte).is_some(), model.config.tie_embeddings);
            let forward = |weights: Weights<Cpu>| {
                let mut acts = Activations::training(&be, &model.config, b, t).unwrap();
                model.forward_with(&be, weights, &mut acts, &tokens, window, Mode::Eval);
                acts.tensors.logits.at(0, window.rows()).to_vec()
            };
            let through_copy = forward(Weights::packed(&params, Some(&copy)));
            assert!(through_copy == forward(Weights::plain(&params)));
            let f32_products = Cpu::new();
            assert!(
                PackedWeights::for_training(&f32_products, &model, &params)
                    .unwrap()
                    .is_none()
            );
        }
    }

    /// A batched decoding step over packed weights (`serve`'s engine) gives
    /// each sequence the logits of decoding it alone: the same bits, since
    /// every output of a quantized product is computed whole from its own row.
    #[test]
    fn batched_packed_decoding_matches_one_sequence_at_a_time() {
        let be = Cpu::new();
        let model = Model::new(gpt()).unwrap();
        let mut rng = Rng::new(4, 0);
        let params: Vec<f32> = (0..model.num_params())
            .map(|_| rng.next_f32() - 0.5)
            .collect();
        let packed = PackedWeights::from_params(&be, &model, &params, WeightType::Q8_0).unwrap();
        let weights = Weights::packed(&params, Some(&packed));
        let prompts: [&[u32]; 2] = [&[1, 2, 3], &[7, 8]];
        let new = |p: &[u32]| {
            let mut acts = Activations::inference(&be, &model.config).unwrap();
            let w = Window::continuing(0, p.len());
            model.forward_with(&be, weights, &mut acts, p, w, Mode::Eval);
            acts
        };
        let (mut alone, mut cached): (Vec<_>, Vec<_>) =
            prompts.iter().map(|p| (new(p), new(p))).unzip();
        let mut batch = Activations::decoding(&be, &model.config, 2).unwrap();
        let (tokens, positions) = ([4u32, 9], [3usize, 2]);
        let mut caches: Vec<_> = cached.iter_mut().collect();
        model.forward_batch(&be, weights, &mut batch, &mut caches, &tokens, &positions);
        for i in 0..2 {
            let w = Window::continuing(positions[i], 1);
            model.forward_with(&be, weights, &mut alone[i], &tokens[i..=i], w, Mode::Eval);
            assert!(
                batch.logits_row(i) == alone[i].logits_row(0),
                "sequence {i}"
            );
        }
    }

    #[test]
    fn unpackable_models_are_refused_with_the_tensor_named() {
        let be = Cpu::new();
        let model = Model::new(ModelConfig {
            n_embd: 48,
            n_head: 2,
            ..gpt()
        })
        .unwrap();
        let params = vec![0.0; model.num_params()];
        let err = PackedWeights::from_params(&be, &model, &params, WeightType::Q8_0).err();
        let err = err.expect("48 is not a multiple of 32").to_string();
        assert!(
            err.contains("transformer.wte.weight") && err.contains("48"),
            "{err}"
        );
        let f32 = PackedWeights::from_params(&be, &model, &params, WeightType::F32).err();
        assert!(f32.is_some());
    }
}
