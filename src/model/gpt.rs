//! The model wiring: forward through the layers, then backward in mirror order.
//!
//! GPT (shapes with `N = B * T` positions):
//! ```text
//! x = drop(wte[idx] + wpe[pos])                               (N, C)
//! for each block (pre-norm, GPT-2):     | (post-norm, the course):
//!   x = x + drop(proj(attn(ln_1(x))))   |   x = ln_1(x + drop(proj(attn(x))))
//!   x = x + drop(mlp(ln_2(x)))          |   x = ln_2(x + drop(mlp(x)))
//! logits = ln_f(x) @ W_head^T + b_head                        (N, V)
//! ```
//! where `attn` is [`attention`] over `c_attn(x) = x @ W_qkv + b_qkv` and
//! `mlp(x) = c_proj(act(c_fc(x)))`. The bigram model is `logits = table[idx]`.
//!
//! All activations live in an [`Activations`] allocated once for a batch
//! shape; a training step allocates nothing.

use super::attention::{self, Dims};
use super::config::{Arch, ModelConfig, Norm};
use super::dropout::Dropout;
use super::params::{BlockParams, LinearParams, NormParams, ParamLayout, split_pair};
use super::{embedding, layernorm, linear, loss};
use crate::error::Result;
use crate::rng::mix64;
use linear::WeightLayout;

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

/// A layer norm's output and the per-position statistics its backward needs.
pub(super) struct NormActs {
    /// `(N, C)`.
    pub(super) out: Vec<f32>,
    /// `(N)` each.
    mean: Vec<f32>,
    rstd: Vec<f32>,
}

impl NormActs {
    fn new(n: usize, c: usize) -> Self {
        NormActs {
            out: vec![0.0; n * c],
            mean: vec![0.0; n],
            rstd: vec![0.0; n],
        }
    }

    /// Normalise the first `n` rows of `inp: (N, C)`.
    fn forward(&mut self, params: &[f32], p: &NormParams, inp: &[f32], n: usize, c: usize) {
        norm_forward(
            params,
            p,
            &mut self.out,
            &mut self.mean[..n],
            &mut self.rstd[..n],
            inp,
            c,
        );
    }
}

/// What one block's forward keeps for its backward.
pub(super) struct BlockActs {
    ln_1: NormActs,
    pub(super) qkv: Vec<f32>,
    /// Attention's log-sum-exp per (batch row, head, query).
    att_lse: Vec<f32>,
    atty: Vec<f32>,
    res_attn: Vec<f32>,
    ln_2: NormActs,
    fc: Vec<f32>,
    fc_act: Vec<f32>,
    res_mlp: Vec<f32>,
}

impl BlockActs {
    fn new(cfg: &ModelConfig, b: usize, t: usize) -> Self {
        let (n, c) = (b * t, cfg.n_embd);
        BlockActs {
            ln_1: NormActs::new(n, c),
            qkv: vec![0.0; n * 3 * c],
            att_lse: vec![0.0; b * cfg.n_head * t],
            atty: vec![0.0; n * c],
            res_attn: vec![0.0; n * c],
            ln_2: NormActs::new(n, c),
            fc: vec![0.0; n * 4 * c],
            fc_act: vec![0.0; n * 4 * c],
            res_mlp: vec![0.0; n * c],
        }
    }

    /// The block's output: the residual stream after the feed-forward (pre-norm)
    /// or its normalisation (post-norm).
    fn output(&self, norm: Norm) -> &[f32] {
        match norm {
            Norm::Pre => &self.res_mlp,
            Norm::Post => &self.ln_2.out,
        }
    }
}

/// Activations and gradient scratch for batches of up to `B x T` tokens.
pub struct Activations {
    pub batch_size: usize,
    pub block_size: usize,
    encoded: Vec<f32>,
    pub(super) blocks: Vec<BlockActs>,
    ln_f: NormActs,
    /// `(B, T, V)` logits after `forward`; their gradient after `backward`.
    pub logits: Vec<f32>,
    losses: Vec<f32>,
    // Backward scratch. `d_res` carries the residual stream's gradient down the blocks.
    d_res: Vec<f32>,
    d_sum: Vec<f32>,
    d_branch: Vec<f32>,
    d_ln: Vec<f32>,
    d_atty: Vec<f32>,
    d_qkv: Vec<f32>,
    d_fc: Vec<f32>,
    att_scratch: Vec<f32>,
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

    /// Buffers for batches of up to `batch_size` rows of `block_size` tokens.
    pub fn activations(&self, batch_size: usize, block_size: usize) -> Activations {
        let cfg = &self.config;
        let (n, v) = (batch_size * block_size, cfg.vocab_size);
        let c = if cfg.arch == Arch::Bigram {
            0
        } else {
            cfg.n_embd
        };
        let layers = if cfg.arch == Arch::Bigram {
            0
        } else {
            cfg.n_layer
        };
        let buf = |len: usize| vec![0.0f32; len];
        Activations {
            batch_size,
            block_size,
            encoded: buf(n * c),
            blocks: (0..layers)
                .map(|_| BlockActs::new(cfg, batch_size, block_size))
                .collect(),
            ln_f: NormActs::new(n, c),
            logits: buf(n * v),
            losses: buf(n),
            d_res: buf(n * c),
            d_sum: buf(n * c),
            d_branch: buf(n * c),
            d_ln: buf(n * c),
            d_atty: buf(n * c),
            d_qkv: buf(n * 3 * c),
            d_fc: buf(n * 4 * c),
            att_scratch: buf(if c == 0 {
                0
            } else {
                batch_size * 3 * block_size * block_size
            }),
        }
    }

    /// Dropout for one site of the network, or `None` when it is off.
    fn dropout(&self, mode: Mode, site: u64) -> Option<Dropout> {
        match mode {
            Mode::Train { seed, step_key } if self.config.dropout > 0.0 => Some(Dropout {
                p: self.config.dropout,
                seed,
                stream: mix64(step_key) ^ site,
            }),
            _ => None,
        }
    }

    fn check_shape(&self, acts: &Activations, idx: &[u32], b: usize, t: usize) {
        assert!(
            b <= acts.batch_size && t <= acts.block_size,
            "batch ({b}, {t}) exceeds the activations' shape"
        );
        assert!(
            t <= self.config.block_size || self.config.arch == Arch::Bigram,
            "sequence longer than block_size"
        );
        assert_eq!(idx.len(), b * t, "idx must hold B * T tokens");
    }

    /// Compute `acts.logits[.. b * t * V]` for the token ids `idx: (B, T)`.
    pub fn forward(
        &self,
        params: &[f32],
        acts: &mut Activations,
        idx: &[u32],
        b: usize,
        t: usize,
        mode: Mode,
    ) {
        self.check_shape(acts, idx, b, t);
        let cfg = &self.config;
        let (n, c, v) = (b * t, cfg.n_embd, cfg.vocab_size);
        let lay = &self.layout;
        if cfg.arch == Arch::Bigram {
            embedding::forward(
                &mut acts.logits[..n * v],
                idx,
                &params[lay.wte.clone()],
                None,
                t,
                v,
            );
            return;
        }
        let encoded = &mut acts.encoded[..n * c];
        embedding::forward(
            encoded,
            idx,
            &params[lay.wte.clone()],
            Some(&params[lay.wpe.clone()]),
            t,
            c,
        );
        if let Some(d) = self.dropout(mode, 0) {
            d.apply(encoded);
        }
        for l in 0..cfg.n_layer {
            let (done, rest) = acts.blocks.split_at_mut(l);
            let x: &[f32] = if l == 0 {
                &acts.encoded
            } else {
                done[l - 1].output(cfg.norm)
            };
            let scratch = &mut acts.att_scratch;
            self.block_forward(l, params, &mut rest[0], scratch, x, b, t, mode);
        }
        let last = acts.blocks[cfg.n_layer - 1].output(cfg.norm);
        let ln_f = lay.ln_f.as_ref().expect("a GPT has a final layer norm");
        acts.ln_f.forward(params, ln_f, last, n, c);
        let head = lay.lm_head_weight.as_ref().unwrap_or(&lay.wte);
        let bias = lay.lm_head_bias.as_ref().map(|r| &params[r.clone()]);
        linear::forward(
            &mut acts.logits,
            &acts.ln_f.out,
            &params[head.clone()],
            bias,
            WeightLayout::OutIn,
            n,
            c,
            v,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn block_forward(
        &self,
        l: usize,
        params: &[f32],
        a: &mut BlockActs,
        att_scratch: &mut [f32],
        x: &[f32],
        b: usize,
        t: usize,
        mode: Mode,
    ) {
        let cfg = &self.config;
        let p: &BlockParams = &self.layout.blocks[l];
        let (n, c) = (b * t, cfg.n_embd);
        let site = 1 + 3 * l as u64;
        // Attention sub-layer.
        if cfg.norm == Norm::Pre {
            a.ln_1.forward(params, &p.ln_1, x, n, c);
        }
        let attn_in: &[f32] = if cfg.norm == Norm::Pre {
            &a.ln_1.out
        } else {
            x
        };
        linear_forward(params, &p.c_attn, &mut a.qkv, attn_in, n, c, 3 * c);
        let dims = Dims {
            b,
            t,
            c,
            n_head: cfg.n_head,
        };
        attention::forward(
            &mut a.atty,
            &mut a.att_lse,
            att_scratch,
            &a.qkv,
            dims,
            self.dropout(mode, site).as_ref(),
        );
        linear_forward(params, &p.attn_proj, &mut a.res_attn, &a.atty, n, c, c);
        add_residual(
            &mut a.res_attn[..n * c],
            &x[..n * c],
            self.dropout(mode, site + 1),
        );
        // Feed-forward sub-layer.
        let h: &[f32] = match cfg.norm {
            Norm::Pre => {
                a.ln_2.forward(params, &p.ln_2, &a.res_attn, n, c);
                &a.res_attn
            }
            Norm::Post => {
                a.ln_1.forward(params, &p.ln_1, &a.res_attn, n, c);
                &a.ln_1.out
            }
        };
        let mlp_in: &[f32] = if cfg.norm == Norm::Pre {
            &a.ln_2.out
        } else {
            h
        };
        let fc_bias = p.c_fc.bias.as_ref().map(|r| &params[r.clone()]);
        linear::forward_activated(
            &mut a.fc,
            &mut a.fc_act,
            mlp_in,
            &params[p.c_fc.weight.clone()],
            fc_bias,
            WeightLayout::InOut,
            n,
            c,
            4 * c,
            cfg.activation,
        );
        linear_forward(params, &p.mlp_proj, &mut a.res_mlp, &a.fc_act, n, 4 * c, c);
        add_residual(
            &mut a.res_mlp[..n * c],
            &h[..n * c],
            self.dropout(mode, site + 2),
        );
        if cfg.norm == Norm::Post {
            a.ln_2.forward(params, &p.ln_2, &a.res_mlp, n, c);
        }
    }

    /// Mean cross-entropy of the logits left by [`Model::forward`] against `targets: (B, T)`.
    pub fn loss(&self, acts: &mut Activations, targets: &[u32]) -> f32 {
        let (n, v) = (targets.len(), self.config.vocab_size);
        loss::forward(&mut acts.losses[..n], &acts.logits[..n * v], targets, v);
        loss::mean(&acts.losses[..n])
    }

    /// After `forward` on the same batch and mode: compute the loss and add the
    /// gradient of `dloss * sum of per-position losses` to `grads` (so
    /// `dloss = 1 / (B * T * grad_accum)` accumulates the mean over a step).
    /// Returns the batch's mean loss. The logits are overwritten.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        params: &[f32],
        grads: &mut [f32],
        acts: &mut Activations,
        idx: &[u32],
        targets: &[u32],
        b: usize,
        t: usize,
        mode: Mode,
        dloss: f32,
    ) -> f32 {
        self.check_shape(acts, idx, b, t);
        let cfg = &self.config;
        let (n, c, v) = (b * t, cfg.n_embd, cfg.vocab_size);
        let lay = &self.layout;
        loss::forward_backward_inplace(
            &mut acts.losses[..n],
            &mut acts.logits[..n * v],
            targets,
            v,
            dloss,
        );
        let mean_loss = loss::mean(&acts.losses[..n]);
        if cfg.arch == Arch::Bigram {
            embedding::backward(
                &mut grads[lay.wte.clone()],
                None,
                &acts.logits[..n * v],
                idx,
                t,
                v,
            );
            return mean_loss;
        }
        // LM head and final layer norm.
        let head = lay.lm_head_weight.as_ref().unwrap_or(&lay.wte);
        let (dhead, dbias) = split_pair(grads, head, lay.lm_head_bias.as_ref());
        let head_w = &params[head.clone()];
        linear::backward(
            &mut acts.d_ln,
            dhead,
            dbias,
            &acts.logits,
            &acts.ln_f.out,
            head_w,
            WeightLayout::OutIn,
            n,
            c,
            v,
        );
        acts.d_res[..n * c].fill(0.0);
        let last = acts.blocks[cfg.n_layer - 1].output(cfg.norm);
        let ln_f = lay.ln_f.as_ref().expect("a GPT has a final layer norm");
        norm_backward(
            params,
            grads,
            ln_f,
            &mut acts.d_res,
            &acts.d_ln,
            last,
            &acts.ln_f,
            n,
            c,
        );
        // Blocks, last to first; d_res goes in as d(block output), comes out as d(block input).
        for l in (0..cfg.n_layer).rev() {
            self.block_backward(l, params, grads, acts, b, t, mode);
        }
        let d_encoded = &mut acts.d_res[..n * c];
        if let Some(d) = self.dropout(mode, 0) {
            d.apply(d_encoded);
        }
        let (dwte, dwpe) = split_pair(grads, &lay.wte, Some(&lay.wpe));
        embedding::backward(dwte, dwpe, d_encoded, idx, t, c);
        mean_loss
    }

    #[allow(clippy::too_many_arguments)]
    fn block_backward(
        &self,
        l: usize,
        params: &[f32],
        grads: &mut [f32],
        acts: &mut Activations,
        b: usize,
        t: usize,
        mode: Mode,
    ) {
        let cfg = &self.config;
        let p = &self.layout.blocks[l];
        let (n, c) = (b * t, cfg.n_embd);
        let site = 1 + 3 * l as u64;
        let (done, rest) = acts.blocks.split_at(l);
        let a = &rest[0];
        let x: &[f32] = if l == 0 {
            &acts.encoded
        } else {
            done[l - 1].output(cfg.norm)
        };
        let nc = n * c;
        let (d_res, d_sum) = (&mut acts.d_res[..nc], &mut acts.d_sum[..nc]);
        let (d_branch, d_ln) = (&mut acts.d_branch[..nc], &mut acts.d_ln[..nc]);
        let d_fc = &mut acts.d_fc[..4 * nc];

        // Through the feed-forward branch, from `d_out` (gradient of the residual
        // sum `res_mlp`) to `d_ln` (gradient of the branch input).
        let mlp_backward = |grads: &mut [f32],
                            d_out: &[f32],
                            mlp_in: &[f32],
                            d_branch: &mut [f32],
                            d_fc: &mut [f32],
                            d_ln: &mut [f32]| {
            let d_branch = through_dropout(d_out, d_branch, self.dropout(mode, site + 2));
            let (dw, db) = split_pair(grads, &p.mlp_proj.weight, p.mlp_proj.bias.as_ref());
            linear::backward_through_activation(
                d_fc,
                dw,
                db,
                d_branch,
                &a.fc_act,
                &a.fc,
                cfg.activation,
                &params[p.mlp_proj.weight.clone()],
                WeightLayout::InOut,
                n,
                4 * c,
                c,
            );
            linear_backward(params, grads, &p.c_fc, d_ln, d_fc, mlp_in, n, c, 4 * c);
        };
        // Through the attention branch, from `d_out` (gradient of `res_attn`) to `d_ln`.
        let d_atty = &mut acts.d_atty[..nc];
        let d_qkv = &mut acts.d_qkv[..3 * nc];
        let scratch = &mut acts.att_scratch[..b * 3 * t * t];
        let dims = Dims {
            b,
            t,
            c,
            n_head: cfg.n_head,
        };
        let mut attn_backward = |grads: &mut [f32],
                                 d_out: &[f32],
                                 attn_in: &[f32],
                                 d_branch: &mut [f32],
                                 d_ln: &mut [f32]| {
            let d_branch = through_dropout(d_out, d_branch, self.dropout(mode, site + 1));
            linear_backward(
                params,
                grads,
                &p.attn_proj,
                d_atty,
                d_branch,
                &a.atty,
                n,
                c,
                c,
            );
            let drop = self.dropout(mode, site);
            attention::backward(
                d_qkv,
                scratch,
                d_atty,
                &a.qkv,
                &a.att_lse,
                dims,
                drop.as_ref(),
            );
            linear_backward(params, grads, &p.c_attn, d_ln, d_qkv, attn_in, n, c, 3 * c);
        };

        match cfg.norm {
            Norm::Pre => {
                // d_res = d(res_mlp); the skip connection passes it on unchanged.
                mlp_backward(grads, d_res, &a.ln_2.out, d_branch, d_fc, d_ln);
                norm_backward(
                    params,
                    grads,
                    &p.ln_2,
                    d_res,
                    d_ln,
                    &a.res_attn,
                    &a.ln_2,
                    n,
                    c,
                );
                // d_res = d(res_attn), the skip again.
                attn_backward(grads, d_res, &a.ln_1.out, d_branch, d_ln);
                norm_backward(params, grads, &p.ln_1, d_res, d_ln, x, &a.ln_1, n, c);
            }
            Norm::Post => {
                // d_res = d(ln_2 output).
                d_sum.fill(0.0);
                norm_backward(
                    params, grads, &p.ln_2, d_sum, d_res, &a.res_mlp, &a.ln_2, n, c,
                );
                mlp_backward(grads, d_sum, &a.ln_1.out, d_branch, d_fc, d_ln);
                add(d_res, d_sum, d_ln); // d(ln_1 output): skip + branch
                d_sum.fill(0.0);
                norm_backward(
                    params,
                    grads,
                    &p.ln_1,
                    d_sum,
                    d_res,
                    &a.res_attn,
                    &a.ln_1,
                    n,
                    c,
                );
                attn_backward(grads, d_sum, x, d_branch, d_ln);
                add(d_res, d_sum, d_ln); // d(block input): skip + branch
            }
        }
    }
}

/// `out = a + b`.
fn add(out: &mut [f32], a: &[f32], b: &[f32]) {
    for ((o, x), y) in out.iter_mut().zip(a).zip(b) {
        *o = x + y;
    }
}

/// The gradient of a residual branch's output before its dropout: `d_out`
/// itself when there is no dropout, else its masked copy in `scratch`.
fn through_dropout<'a>(
    d_out: &'a [f32],
    scratch: &'a mut [f32],
    dropout: Option<Dropout>,
) -> &'a [f32] {
    match dropout {
        None => d_out,
        Some(d) => {
            scratch.copy_from_slice(d_out);
            d.apply(scratch);
            scratch
        }
    }
}

/// `branch = drop(branch) + skip`: closes a residual connection in place.
fn add_residual(branch: &mut [f32], skip: &[f32], dropout: Option<Dropout>) {
    if let Some(d) = dropout {
        d.apply(branch);
    }
    for (o, s) in branch.iter_mut().zip(skip) {
        *o += s;
    }
}

pub(super) fn norm_forward(
    params: &[f32],
    p: &NormParams,
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    inp: &[f32],
    c: usize,
) {
    let bias = p.bias.as_ref().map(|r| &params[r.clone()]);
    layernorm::forward(out, mean, rstd, inp, &params[p.weight.clone()], bias, c);
}

#[allow(clippy::too_many_arguments)]
fn norm_backward(
    params: &[f32],
    grads: &mut [f32],
    p: &NormParams,
    dinp: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    saved: &NormActs,
    n: usize,
    c: usize,
) {
    let (mean, rstd) = (&saved.mean[..n], &saved.rstd[..n]);
    let (dw, db) = split_pair(grads, &p.weight, p.bias.as_ref());
    layernorm::backward(
        dinp,
        dw,
        db,
        dout,
        inp,
        &params[p.weight.clone()],
        mean,
        rstd,
        c,
    );
}

pub(super) fn linear_forward(
    params: &[f32],
    p: &LinearParams,
    out: &mut [f32],
    inp: &[f32],
    n: usize,
    fan_in: usize,
    fan_out: usize,
) {
    let bias = p.bias.as_ref().map(|r| &params[r.clone()]);
    linear::forward(
        out,
        inp,
        &params[p.weight.clone()],
        bias,
        WeightLayout::InOut,
        n,
        fan_in,
        fan_out,
    );
}

#[allow(clippy::too_many_arguments)]
fn linear_backward(
    params: &[f32],
    grads: &mut [f32],
    p: &LinearParams,
    dinp: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    n: usize,
    fan_in: usize,
    fan_out: usize,
) {
    let (dw, db) = split_pair(grads, &p.weight, p.bias.as_ref());
    linear::backward(
        dinp,
        dw,
        db,
        dout,
        inp,
        &params[p.weight.clone()],
        WeightLayout::InOut,
        n,
        fan_in,
        fan_out,
    );
}
