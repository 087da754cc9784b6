//! Incremental decoding with a key/value cache (GPT only).
//!
//! Generating token `n + 1` only needs the new position's query: the keys and
//! values of positions `0..n` do not change (attention is causal), so they are
//! kept per layer and each new token costs one position instead of the whole
//! context:
//! ```text
//! x = wte[token] + wpe[pos]                                   (C)
//! per block: q, k, v = c_attn(x)  ->  K[pos] = k, V[pos] = v
//!            y = softmax(q K[0..=pos]^T / sqrt(hs)) V[0..=pos]  (per head)
//!            then the block's projection, residuals, norms and MLP on one row
//! logits = lm_head(ln_f(x))                                   (V)
//! ```
//! [`Model::prefill`] fills the cache from a whole prompt with the ordinary
//! batched forward, so cached and uncached sampling compute the same numbers.

use super::gpt::{Activations, Model, linear_forward, norm_forward};
use super::{Mode, Norm, activation, embedding, linear};
use crate::backend::cpu::math::{axpy, dot, exp};

/// Cached keys and values of every layer, and one position's scratch.
pub struct KvCache {
    /// `(n_layer, block_size, C)` each.
    k: Vec<f32>,
    v: Vec<f32>,
    /// Number of positions cached.
    pub len: usize,
    /// The logits left by [`Model::decode_step`].
    pub logits: Vec<f32>,
    x: Vec<f32>,
    h: Vec<f32>,
    qkv: Vec<f32>,
    y: Vec<f32>,
    a: Vec<f32>,
    fc: Vec<f32>,
    fc_act: Vec<f32>,
    stats: [f32; 2],
    scores: Vec<f32>,
}

impl Model {
    /// An empty cache sized for this model's full context.
    pub fn kv_cache(&self) -> KvCache {
        let cfg = &self.config;
        let c = cfg.n_embd;
        let size = cfg.n_layer * cfg.block_size * c;
        KvCache {
            // Two fresh zeroed allocations: the OS maps pages as decoding reaches
            // them (a clone would copy, and touch, the whole cache up front).
            k: vec![0.0; size],
            v: vec![0.0; size],
            len: 0,
            logits: vec![0.0; cfg.vocab_size],
            x: vec![0.0; c],
            h: vec![0.0; c],
            qkv: vec![0.0; 3 * c],
            y: vec![0.0; c],
            a: vec![0.0; c],
            fc: vec![0.0; 4 * c],
            fc_act: vec![0.0; 4 * c],
            stats: [0.0; 2],
            scores: vec![0.0; cfg.block_size],
        }
    }

    /// Run the batched forward on `tokens` (at most `block_size`; logits in
    /// `acts.logits`) and cache every layer's keys and values.
    pub fn prefill(
        &self,
        params: &[f32],
        acts: &mut Activations,
        cache: &mut KvCache,
        tokens: &[u32],
    ) {
        let (t, c, block) = (tokens.len(), self.config.n_embd, self.config.block_size);
        self.forward(params, acts, tokens, 1, t, Mode::Eval);
        for (l, layer) in acts.blocks.iter().enumerate() {
            for pos in 0..t {
                let row = &layer.qkv[pos * 3 * c..(pos + 1) * 3 * c];
                let at = (l * block + pos) * c;
                cache.k[at..at + c].copy_from_slice(&row[c..2 * c]);
                cache.v[at..at + c].copy_from_slice(&row[2 * c..]);
            }
        }
        cache.len = t;
    }

    /// Feed `token` at position `cache.len`; its next-token logits land in `cache.logits`.
    pub fn decode_step(&self, params: &[f32], cache: &mut KvCache, token: u32) {
        let cfg = &self.config;
        let lay = &self.layout;
        let (c, hs, block, pos) = (cfg.n_embd, cfg.head_size(), cfg.block_size, cache.len);
        assert!(
            pos < block,
            "the cache is full: the context is block_size long"
        );
        let KvCache {
            k,
            v,
            x,
            h,
            qkv,
            y,
            a,
            fc,
            fc_act,
            stats,
            scores,
            logits,
            ..
        } = cache;
        let (mean, rstd) = stats.split_at_mut(1);
        let wpe_row = &params[lay.wpe.start + pos * c..lay.wpe.start + (pos + 1) * c];
        embedding::forward(x, &[token], &params[lay.wte.clone()], Some(wpe_row), 1, c);
        let scale = 1.0 / (hs as f32).sqrt();
        for (l, p) in lay.blocks.iter().enumerate() {
            if cfg.norm == Norm::Pre {
                norm_forward(params, &p.ln_1, h, mean, rstd, x, c);
            }
            linear_forward(
                params,
                &p.c_attn,
                qkv,
                if cfg.norm == Norm::Pre { h } else { x },
                1,
                c,
                3 * c,
            );
            let layer = l * block * c;
            k[layer + pos * c..layer + (pos + 1) * c].copy_from_slice(&qkv[c..2 * c]);
            v[layer + pos * c..layer + (pos + 1) * c].copy_from_slice(&qkv[2 * c..]);
            for head in 0..cfg.n_head {
                let q = &qkv[head * hs..(head + 1) * hs];
                let key = |t2: usize| &k[layer + t2 * c + head * hs..][..hs];
                let mut max = f32::NEG_INFINITY;
                for (t2, score) in scores[..=pos].iter_mut().enumerate() {
                    *score = dot(q, key(t2)) * scale;
                    max = max.max(*score);
                }
                let mut sum = 0.0;
                for s in &mut scores[..=pos] {
                    *s = exp(*s - max);
                    sum += *s;
                }
                let out = &mut y[head * hs..(head + 1) * hs];
                out.fill(0.0);
                for t2 in 0..=pos {
                    axpy(
                        out,
                        scores[t2] / sum,
                        &v[layer + t2 * c + head * hs..][..hs],
                    );
                }
            }
            linear_forward(params, &p.attn_proj, a, y, 1, c, c);
            // a = attention branch; close the residual, then the MLP sub-layer.
            add(a, x); // a = x + attn
            match cfg.norm {
                Norm::Pre => {
                    x.copy_from_slice(a);
                    norm_forward(params, &p.ln_2, h, mean, rstd, x, c);
                }
                Norm::Post => {
                    norm_forward(params, &p.ln_1, x, mean, rstd, a, c);
                    h.copy_from_slice(x);
                }
            }
            linear_forward(params, &p.c_fc, fc, h, 1, c, 4 * c);
            activation::forward(fc_act, fc, cfg.activation);
            linear_forward(params, &p.mlp_proj, a, fc_act, 1, 4 * c, c);
            add(a, x); // a = x + mlp
            match cfg.norm {
                Norm::Pre => x.copy_from_slice(a),
                Norm::Post => norm_forward(params, &p.ln_2, x, mean, rstd, a, c),
            }
        }
        let ln_f = lay.ln_f.as_ref().expect("a GPT has a final layer norm");
        norm_forward(params, ln_f, h, mean, rstd, x, c);
        let head = lay.lm_head_weight.as_ref().unwrap_or(&lay.wte);
        let bias = lay.lm_head_bias.as_ref().map(|r| &params[r.clone()]);
        linear::forward(
            logits,
            h,
            &params[head.clone()],
            bias,
            linear::WeightLayout::OutIn,
            1,
            c,
            cfg.vocab_size,
        );
        cache.len += 1;
    }
}

fn add(out: &mut [f32], x: &[f32]) {
    out.iter_mut().zip(x).for_each(|(o, x)| *o += x);
}

#[cfg(test)]
mod tests {
    use crate::model::{Activation, Arch, Mode, Model, ModelConfig, Norm};
    use crate::rng::Rng;

    /// Decoding token by token from the cache gives the logits of a full forward.
    #[test]
    fn cached_logits_match_the_full_forward() {
        for (norm, act, tie) in [
            (Norm::Pre, Activation::Gelu, true),
            (Norm::Post, Activation::Relu, false),
        ] {
            let cfg = ModelConfig {
                arch: Arch::Gpt,
                vocab_size: 17,
                block_size: 9,
                n_layer: 2,
                n_head: 2,
                n_embd: 8,
                dropout: 0.1,
                norm,
                activation: act,
                tie_embeddings: tie,
                bias: true,
                qkv_bias: false,
                lm_head_bias: !tie,
            };
            let model = Model::new(cfg).unwrap();
            let mut rng = Rng::new(5, 0);
            let params: Vec<f32> = (0..model.num_params())
                .map(|_| rng.next_f32() - 0.5)
                .collect();
            let tokens: Vec<u32> = (0..9).map(|_| rng.below(17) as u32).collect();
            let mut full = model.activations(1, 9);
            model.forward(&params, &mut full, &tokens, 1, 9, Mode::Eval);
            let mut acts = model.activations(1, 9);
            let mut cache = model.kv_cache();
            model.prefill(&params, &mut acts, &mut cache, &tokens[..3]);
            for pos in 3..9 {
                model.decode_step(&params, &mut cache, tokens[pos]);
                let expected = &full.logits[pos * 17..(pos + 1) * 17];
                for (a, e) in cache.logits.iter().zip(expected) {
                    assert!((a - e).abs() < 1e-5, "{norm:?} position {pos}: {a} vs {e}");
                }
            }
            assert_eq!(cache.len, 9);
        }
    }
}
