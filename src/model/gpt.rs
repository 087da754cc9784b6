//! The model wiring: forward through the layers, then backward in mirror
//! order, written once as calls to a [`Backend`].
//!
//! GPT (shapes with `N` positions):
//! ```text
//! x = drop(wte[idx] + wpe[pos])                               (N, C)
//! for each block (pre-norm, GPT-2):     | (post-norm, the course):
//!   x = x + drop(proj(attn(ln_1(x))))   |   x = ln_1(x + drop(proj(attn(x))))
//!   x = x + drop(mlp(ln_2(x)))          |   x = ln_2(x + drop(mlp(x)))
//! logits = ln_f(x) @ W_head^T + b_head                        (N, V)
//! ```
//! where `attn` is causal self-attention over `c_attn(x) = x @ W_qkv + b_qkv`
//! and `mlp(x) = c_proj(act(c_fc(x)))` (the blocks: [`super::block`]). The
//! bigram model is `logits = table[idx]`.
//!
//! Training runs [`Model::forward`] on a batch, then [`Model::backward`].
//! Decoding runs the same forward on new positions only: a [`Window`] at
//! `pos > 0` over [`Purpose::Inference`] activations, whose per-layer `qkv`
//! rows of earlier positions are the KV cache, so each new token costs one
//! position. All activations are allocated once ([`super::activations`]);
//! a training step allocates nothing.

use super::activations::{Activations, NormActs, Purpose, Window};
use super::block;
use super::config::{Arch, ModelConfig};
use super::grads::Grads;
use super::layers::Weights;
use super::lora::LoraScratch;
use super::packed::PackedWeights;
use super::params::ParamLayout;
use crate::backend::{Backend, Dropout};
use crate::error::Result;
use crate::rng::mix64;

/// Whether dropout is active, and which random stream its masks come from.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// No dropout (evaluation, sampling).
    Eval,
    /// Dropout on, with masks keyed by `(seed, step_key, site)`; `step_key`
    /// must differ between micro-steps and be the same when a step is redone.
    Train { seed: u64, step_key: u64 },
}

/// A model: its config and where its parameters sit in the flat buffers.
#[derive(Debug, Clone)]
pub struct Model {
    pub config: ModelConfig,
    pub layout: ParamLayout,
}

/// What every layer of one forward or backward pass shares.
pub(super) struct Pass<'p, B: Backend> {
    pub be: &'p B,
    pub params: &'p B::Buf,
    /// The packed matrices, when decoding with `--weights` other than f32
    /// or training with a bf16 copy (forward products only).
    pub packed: Option<&'p PackedWeights<B>>,
    pub window: Window,
    pub mode: Mode,
    /// LoRA's scratch, shared with the activations (adapted models only).
    pub lora: Option<std::sync::Arc<LoraScratch<B>>>,
    /// The rotary embeddings' table (Llama family only).
    pub rope: Option<std::sync::Arc<B::Buf>>,
    /// Keys and values are cached apart from `qkv` (a Llama decoding).
    pub kv_cache: bool,
}

impl<'p, B: Backend> Pass<'p, B> {
    fn new(
        be: &'p B,
        weights: Weights<'p, B>,
        acts: &Activations<B>,
        window: Window,
        mode: Mode,
    ) -> Self {
        Pass {
            be,
            params: weights.params,
            packed: weights.packed,
            window,
            mode,
            lora: acts.lora.clone(),
            rope: acts.rope.clone(),
            kv_cache: acts.rope.is_some() && acts.purpose == Purpose::Inference,
        }
    }

    /// The parameters as the linear layers read them.
    pub fn weights(&self) -> Weights<'_, B> {
        Weights {
            params: self.params,
            lora: self.lora.as_deref(),
            packed: self.packed,
        }
    }
}

impl Model {
    pub fn new(config: ModelConfig) -> Result<Self> {
        config.validate()?;
        let layout = ParamLayout::new(&config);
        Ok(Model { config, layout })
    }

    pub fn num_params(&self) -> usize {
        self.layout.total
    }

    /// Dropout for one site of the network, or `None` when it is off.
    pub(super) fn dropout(&self, mode: Mode, site: u64) -> Option<Dropout> {
        match mode {
            Mode::Train { seed, step_key } if self.config.dropout > 0.0 => Some(Dropout {
                p: self.config.dropout,
                seed,
                stream: mix64(step_key) ^ site,
            }),
            _ => None,
        }
    }

    /// Compute the logits of the `window` positions, whose token ids are
    /// `tokens` (`window.n()` of them, `(B, T)` row-major). Training
    /// activations get every position's logits, inference activations the
    /// last position's ([`Activations::logits_row`]).
    pub fn forward<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        acts: &mut Activations<B>,
        tokens: &[u32],
        window: Window,
        mode: Mode,
    ) {
        self.forward_with(be, Weights::plain(params), acts, tokens, window, mode)
    }

    /// [`Model::forward`] with the matrices of `weights.packed` read from
    /// there (decoding with `--weights`, or training's bf16 copy); without
    /// them it is `forward` itself.
    pub fn forward_with<B: Backend>(
        &self,
        be: &B,
        weights: Weights<'_, B>,
        acts: &mut Activations<B>,
        tokens: &[u32],
        window: Window,
        mode: Mode,
    ) {
        acts.check(window);
        assert_eq!(tokens.len(), window.n(), "one token id per position");
        assert!(
            window.pos + window.t <= self.config.block_size || self.config.arch == Arch::Bigram,
            "positions beyond block_size"
        );
        assert!(
            acts.purpose == Purpose::Training || matches!(mode, Mode::Eval),
            "inference activations have no dropout masks to replay"
        );
        be.upload_ids(&mut acts.tokens, window.rows().start, tokens);
        let pass = Pass::new(be, weights, acts, window, mode);
        if self.config.arch == Arch::Bigram {
            return self.bigram_forward(&pass, acts);
        }
        self.embed(&pass, acts);
        for l in 0..self.config.n_layer {
            self.block_forward(&pass, l, &mut acts.tensors);
        }
        self.head_forward(&pass, acts);
    }

    /// One decoding step for several sequences at once: sequence `i` adds
    /// the token `tokens[i]` at position `positions[i]`, with its earlier
    /// positions' keys and values in `caches[i]` (inference activations
    /// filled by [`Model::forward`]). The new keys and values go into each
    /// cache and the logits into row `i` of `batch` (decoding activations).
    /// The layers run once over all the rows (the weights are read once for
    /// the batch); only attention runs per sequence, over its own cache.
    pub fn forward_batch<B: Backend>(
        &self,
        be: &B,
        weights: Weights<'_, B>,
        batch: &mut Activations<B>,
        caches: &mut [&mut Activations<B>],
        tokens: &[u32],
        positions: &[usize],
    ) {
        let window = Window::batch(tokens.len(), 1);
        assert_eq!(
            batch.purpose,
            Purpose::Decoding,
            "a batch needs decoding activations"
        );
        assert!(caches.len() == tokens.len() && positions.len() == tokens.len());
        batch.check(window);
        for (cache, &pos) in caches.iter().zip(positions) {
            cache.check(Window::continuing(pos, 1));
        }
        be.upload_ids(&mut batch.tokens, 0, tokens);
        let pass = Pass::new(be, weights, batch, window, Mode::Eval);
        if self.config.arch == Arch::Bigram {
            return self.bigram_forward(&pass, batch);
        }
        self.embed_at(&pass, batch, positions);
        let mut caches: Vec<_> = caches.iter_mut().map(|a| &mut a.tensors).collect();
        for l in 0..self.config.n_layer {
            self.block_decode(&pass, l, &mut batch.tensors, &mut caches, positions);
        }
        self.head_forward(&pass, batch);
    }

    /// `encoded[i] = wte[idx[i]] + wpe[positions[i]]` (a Llama has no
    /// `wpe`: its positions are rotations inside attention), one row per sequence.
    fn embed_at<B: Backend>(&self, pass: &Pass<B>, acts: &mut Activations<B>, positions: &[usize]) {
        let lay = &self.layout;
        let wte = B::view(pass.params, lay.wte.clone());
        let c = self.config.n_embd;
        let table = pass.packed.and_then(|p| p.embedding_table(&lay.wte));
        for (i, &pos) in positions.iter().enumerate() {
            let wpe = (!lay.wpe.is_empty()).then(|| B::view(pass.params, lay.wpe.clone()));
            let idx = B::ids_view(&acts.tokens, i..i + 1);
            let row = acts.tensors.encoded.at_mut(0, i..i + 1);
            match table {
                Some(table) => pass.be.packed_rows(row, idx, table, wpe, pos, 1),
                None => pass.be.embedding_forward(row, idx, wte, wpe, pos, 1, c),
            }
        }
    }

    /// `logits = table[idx]`: the token's row of the bigram table.
    fn bigram_forward<B: Backend>(&self, pass: &Pass<B>, acts: &mut Activations<B>) {
        let (src, dst) = acts.head_rows(pass.window);
        let table = B::view(pass.params, self.layout.wte.clone());
        let idx = B::ids_view(&acts.tokens, src.into());
        let logits = acts.tensors.logits.at_mut(0, dst);
        let v = self.config.vocab_size;
        pass.be.embedding_forward(logits, idx, table, None, 0, 1, v);
    }

    /// `encoded = drop(wte[idx] + wpe[pos])`.
    fn embed<B: Backend>(&self, pass: &Pass<B>, acts: &mut Activations<B>) {
        let (be, w, lay) = (pass.be, pass.window, &self.layout);
        let rows = w.rows();
        let wte = B::view(pass.params, lay.wte.clone());
        let wpe = (!lay.wpe.is_empty()).then(|| B::view(pass.params, lay.wpe.clone()));
        let idx = B::ids_view(&acts.tokens, rows.into());
        let encoded = &mut acts.tensors.encoded;
        let c = self.config.n_embd;
        match pass.packed.and_then(|p| p.embedding_table(&lay.wte)) {
            Some(table) => be.packed_rows(encoded.at_mut(0, rows), idx, table, wpe, w.pos, w.t),
            None => be.embedding_forward(encoded.at_mut(0, rows), idx, wte, wpe, w.pos, w.t, c),
        }
        if let Some(d) = self.dropout(pass.mode, 0) {
            be.dropout(encoded.at_mut(0, rows), d);
        }
    }

    /// `logits = ln_f(x) @ W_head^T + b_head` for the head's rows.
    fn head_forward<B: Backend>(&self, pass: &Pass<B>, acts: &mut Activations<B>) {
        let (be, params) = (pass.be, pass.params);
        let (c, last) = (self.config.n_embd, self.config.n_layer - 1);
        let (src, dst) = acts.head_rows(pass.window);
        let lay = &self.layout;
        let ln_f = lay.ln_f.as_ref().expect("a GPT has a final layer norm");
        let head = lay.lm_head.as_ref().expect("a GPT has an LM head");
        let a = &mut acts.tensors;
        let x = block::output(&a.res_mlp, &a.ln_2.out, self.config.norm, last, src);
        let NormActs { out, mean, rstd } = &mut a.ln_f;
        let (out, mean, rstd) = (out.at_mut(0, dst), mean.at_mut(0, dst), rstd.at_mut(0, dst));
        ln_f.forward(be, params, out, mean, rstd, x, dst.len(), c);
        let logits = a.logits.at_mut(0, dst);
        head.forward(
            be,
            Weights::packed(params, pass.packed),
            logits,
            a.ln_f.out.at(0, dst),
            dst.len(),
        );
    }

    /// Mean cross-entropy of the logits left by [`Model::forward`] (training
    /// or scoring activations, same window) against `targets: (B, T)`; the
    /// per-position losses stay in `acts.tensors.losses` ([`Activations::losses`]).
    pub fn loss<B: Backend>(
        &self,
        be: &B,
        acts: &mut Activations<B>,
        targets: &[u32],
        window: Window,
    ) -> f32 {
        self.cross_entropy(be, acts, targets, window, None)
    }

    fn cross_entropy<B: Backend>(
        &self,
        be: &B,
        acts: &mut Activations<B>,
        targets: &[u32],
        window: Window,
        dloss: Option<f32>,
    ) -> f32 {
        assert!(
            matches!(acts.purpose, Purpose::Training | Purpose::Scoring),
            "losses need training or scoring activations"
        );
        assert_eq!(targets.len(), window.n(), "one target per position");
        let rows = window.rows();
        be.upload_ids(&mut acts.targets, rows.start, targets);
        let a = &mut acts.tensors;
        let targets = B::ids_view(&acts.targets, rows.into());
        let (losses, logits) = (a.losses.at_mut(0, rows), a.logits.at_mut(0, rows));
        be.cross_entropy(losses, logits, targets, self.config.vocab_size, dloss)
    }

    /// After [`Model::forward`] on the same batch and mode: compute the loss
    /// and add the gradient of `dloss * sum of per-position losses` to
    /// `grads` (so `dloss = 1 / (B * T * grad_accum)` accumulates the mean
    /// over a step). Returns the batch's mean loss. The logits are overwritten.
    #[allow(clippy::too_many_arguments)]
    pub fn backward<B: Backend>(
        &self,
        be: &B,
        params: &B::Buf,
        grads: &mut Grads<B>,
        acts: &mut Activations<B>,
        targets: &[u32],
        window: Window,
        mode: Mode,
        dloss: f32,
    ) -> f32 {
        acts.check(window);
        let mean_loss = self.cross_entropy(be, acts, targets, window, Some(dloss));
        let pass = Pass::new(be, Weights::plain(params), acts, window, mode);
        if self.config.arch == Arch::Bigram {
            let rows = window.rows();
            let Some(dtable) = grads.get(&self.layout.wte) else {
                return mean_loss;
            };
            let idx = B::ids_view(&acts.tokens, rows.into());
            let dlogits = acts.tensors.logits.at(0, rows);
            be.embedding_backward(dtable, None, dlogits, idx, 1, self.config.vocab_size);
            return mean_loss;
        }
        self.head_backward(&pass, grads, acts);
        for l in (self.lowest_trained_block(grads)..self.config.n_layer).rev() {
            self.block_backward(&pass, l, grads, &acts.tensors, &mut acts.scratch);
        }
        self.embed_backward(&pass, grads, acts);
        mean_loss
    }

    /// Through the LM head and `ln_f`: leaves the gradient of the last
    /// block's output in `d_res`.
    /// Backward stops above the blocks that neither train nor lead to a
    /// tensor that does: frozen blocks over frozen embeddings (without LoRA,
    /// whose adapters train in every block).
    fn lowest_trained_block<B: Backend>(&self, grads: &Grads<B>) -> usize {
        if self.config.lora.is_some() || !grads.is_frozen(&self.layout.wte) {
            return 0;
        }
        let blocks = &self.layout.blocks;
        (0..blocks.len())
            .find(|&l| !grads.is_frozen(&(blocks[l].start()..blocks[l].start() + 1)))
            .unwrap_or(blocks.len())
    }

    fn head_backward<B: Backend>(
        &self,
        pass: &Pass<B>,
        grads: &mut Grads<B>,
        acts: &mut Activations<B>,
    ) {
        let (be, params) = (pass.be, pass.params);
        let (c, last) = (self.config.n_embd, self.config.n_layer - 1);
        let (rows, n) = (pass.window.rows(), pass.window.n());
        let lay = &self.layout;
        let ln_f = lay.ln_f.as_ref().expect("a GPT has a final layer norm");
        let head = lay.lm_head.as_ref().expect("a GPT has an LM head");
        let (a, s) = (&acts.tensors, &mut acts.scratch);
        let (dlogits, ln_f_out) = (a.logits.at(0, rows), a.ln_f.out.at(0, rows));
        head.backward(
            be,
            Weights::plain(params),
            grads,
            s.d_ln.at_mut(0, rows),
            dlogits,
            ln_f_out,
            n,
            None,
        );
        be.fill(s.d_res.at_mut(0, rows), 0.0);
        let x = block::output(&a.res_mlp, &a.ln_2.out, self.config.norm, last, rows);
        let stats = (a.ln_f.mean.at(0, rows), a.ln_f.rstd.at(0, rows));
        let (d_res, d_ln) = (s.d_res.at_mut(0, rows), s.d_ln.at(0, rows));
        ln_f.backward(be, params, grads, d_res, d_ln, x, stats, n, c);
    }

    /// Through the embedding's dropout into `wte` and `wpe`.
    fn embed_backward<B: Backend>(
        &self,
        pass: &Pass<B>,
        grads: &mut Grads<B>,
        acts: &mut Activations<B>,
    ) {
        let (be, w) = (pass.be, pass.window);
        let rows = w.rows();
        if grads.is_frozen(&self.layout.wte) {
            return;
        }
        let d_encoded = &mut acts.scratch.d_res;
        if let Some(d) = self.dropout(pass.mode, 0) {
            be.dropout(d_encoded.at_mut(0, rows), d);
        }
        let lay = &self.layout;
        let (idx, c) = (B::ids_view(&acts.tokens, rows.into()), self.config.n_embd);
        let dout = d_encoded.at(0, rows);
        if lay.wpe.is_empty() {
            let Some(dwte) = grads.get(&lay.wte) else {
                return;
            };
            return be.embedding_backward(dwte, None, dout, idx, w.t, c);
        }
        let Some((dwte, dwpe)) = grads.pair(&lay.wte, &lay.wpe) else {
            return; // frozen embeddings
        };
        be.embedding_backward(dwte, Some(dwpe), dout, idx, w.t, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::Cpu;
    use crate::model::{Activation, Norm};
    use crate::rng::Rng;

    /// Decoding position by position from the cache (inference activations,
    /// one slot per layer except the cache) gives the logits of one forward
    /// over the whole sequence (training activations, no cache), in both
    /// GPT layouts and a Llama with grouped-query attention.
    #[test]
    fn cached_logits_match_the_full_forward() {
        let gpt = |norm, activation, tie: bool| ModelConfig {
            arch: Arch::Gpt,
            vocab_size: 17,
            block_size: 9,
            n_layer: 2,
            n_head: 2,
            n_embd: 8,
            dropout: 0.1,
            norm,
            activation,
            tie_embeddings: tie,
            bias: true,
            qkv_bias: false,
            lm_head_bias: !tie,
            llama: None,
            lora: None,
        };
        let llama = ModelConfig {
            arch: Arch::Llama,
            n_head: 4,
            bias: false,
            qkv_bias: true,
            lm_head_bias: false,
            llama: Some(crate::model::LlamaConfig {
                n_kv_head: 2,
                intermediate_size: 12,
                rope_theta: 10_000.0,
                rope_scaling: Default::default(),
                rms_norm_eps: 1e-6,
            }),
            ..gpt(Norm::Pre, Activation::Silu, false)
        };
        for cfg in [
            gpt(Norm::Pre, Activation::Gelu, true),
            gpt(Norm::Post, Activation::Relu, false),
            llama,
        ] {
            check_cache_against_full_forward(cfg);
        }
    }

    fn check_cache_against_full_forward(cfg: ModelConfig) {
        let arch = cfg.arch;
        let (be, model) = (Cpu::new(), Model::new(cfg).unwrap());
        let mut rng = Rng::new(5, 0);
        let params: Vec<f32> = (0..model.num_params())
            .map(|_| rng.next_f32() - 0.5)
            .collect();
        let tokens: Vec<u32> = (0..9).map(|_| rng.below(17) as u32).collect();
        let mut full = Activations::training(&be, &model.config, 1, 9).unwrap();
        let whole = Window::batch(1, 9);
        model.forward(&be, &params, &mut full, &tokens, whole, Mode::Eval);
        let mut cached = Activations::inference(&be, &model.config).unwrap();
        let prompt = Window::continuing(0, 3);
        model.forward(&be, &params, &mut cached, &tokens[..3], prompt, Mode::Eval);
        for pos in 3..9 {
            let step = Window::continuing(pos, 1);
            let token = &tokens[pos..=pos];
            model.forward(&be, &params, &mut cached, token, step, Mode::Eval);
            let (got, expected) = (cached.logits_row(0), full.logits_row(pos));
            for (a, e) in got.iter().zip(expected) {
                assert!((a - e).abs() < 1e-5, "{arch:?} position {pos}: {a} vs {e}");
            }
        }
    }

    /// A decoding batch of three sequences at different positions gives each
    /// the logits that decoding it alone from its cache gives, step after
    /// step (and leaves the same keys and values in its cache): both GPT
    /// layouts, and a Llama (RoPE at each row's position, grouped KV cache).
    #[test]
    fn batched_decoding_matches_one_sequence_at_a_time() {
        let gpt = |norm| ModelConfig {
            arch: Arch::Gpt,
            vocab_size: 17,
            block_size: 12,
            n_layer: 2,
            n_head: 2,
            n_embd: 8,
            dropout: 0.0,
            norm,
            activation: Activation::Gelu,
            tie_embeddings: true,
            bias: true,
            qkv_bias: false,
            lm_head_bias: false,
            llama: None,
            lora: None,
        };
        let llama = ModelConfig {
            arch: Arch::Llama,
            n_head: 4,
            bias: false,
            activation: Activation::Silu,
            llama: Some(crate::model::LlamaConfig {
                n_kv_head: 2,
                intermediate_size: 12,
                rope_theta: 10_000.0,
                rope_scaling: Default::default(),
                rms_norm_eps: 1e-6,
            }),
            ..gpt(Norm::Pre)
        };
        // Wide enough that the batch's products take the few-rows kernels
        // (`backend::cpu::few_rows`): GPT's (IN, OUT) weights, the head's and
        // a Llama's (OUT, IN) ones.
        let wide = |cfg: &ModelConfig| ModelConfig {
            vocab_size: 1000,
            n_embd: 128,
            llama: cfg.llama.clone().map(|l| crate::model::LlamaConfig {
                intermediate_size: 384,
                ..l
            }),
            ..cfg.clone()
        };
        let (wide_gpt, wide_llama) = (wide(&gpt(Norm::Pre)), wide(&llama));
        for cfg in [gpt(Norm::Pre), gpt(Norm::Post), llama, wide_gpt, wide_llama] {
            check_batch_against_one_at_a_time(cfg);
        }
    }

    fn check_batch_against_one_at_a_time(cfg: ModelConfig) {
        let (be, model) = (Cpu::new(), Model::new(cfg).unwrap());
        let mut rng = Rng::new(9, 0);
        let params: Vec<f32> = (0..model.num_params())
            .map(|_| rng.next_f32() - 0.5)
            .collect();
        let prompt_lens = [2, 5, 3];
        let seqs: Vec<Vec<u32>> = prompt_lens
            .iter()
            .map(|&n| (0..n + 4).map(|_| rng.below(17) as u32).collect())
            .collect();
        let new_acts = || Activations::inference(&be, &model.config).unwrap();
        let (mut alone, mut batched): (Vec<_>, Vec<_>) =
            (0..3).map(|_| (new_acts(), new_acts())).unzip();
        for (i, seq) in seqs.iter().enumerate() {
            let prompt = &seq[..prompt_lens[i]];
            let w = Window::continuing(0, prompt.len());
            model.forward(&be, &params, &mut alone[i], prompt, w, Mode::Eval);
            model.forward(&be, &params, &mut batched[i], prompt, w, Mode::Eval);
        }
        let mut batch = Activations::decoding(&be, &model.config, 4).unwrap();
        for step in 0..4 {
            let positions: Vec<usize> = prompt_lens.iter().map(|&p| p + step).collect();
            let tokens: Vec<u32> = positions.iter().zip(&seqs).map(|(&p, s)| s[p]).collect();
            let mut caches: Vec<_> = batched.iter_mut().collect();
            let weights = Weights::plain(&params);
            model.forward_batch(&be, weights, &mut batch, &mut caches, &tokens, &positions);
            for i in 0..3 {
                let w = Window::continuing(positions[i], 1);
                model.forward(&be, &params, &mut alone[i], &tokens[i..=i], w, Mode::Eval);
                let (got, expected) = (batch.logits_row(i), alone[i].logits_row(0));
                for (a, e) in got.iter().zip(expected) {
                    let arch = model.config.arch;
                    assert!(
                        (a - e).abs() < 1e-5 * e.abs().max(1.0),
                        "{arch:?} seq {i} step {step}: {a} vs {e}"
                    );
                }
            }
        }
        let cached = |a: &Activations<Cpu>| match model.config.arch {
            Arch::Llama => a.tensors.kv_cache.at(1, 0..8).to_vec(),
            _ => a.tensors.qkv.at(1, 0..8).to_vec(),
        };
        for (b, a) in batched.iter().zip(&alone) {
            let close = cached(b)
                .iter()
                .zip(cached(a))
                .all(|(x, y)| (x - y).abs() < 1e-5);
            assert!(close, "{:?}: caches differ", model.config.arch);
        }
    }
}
