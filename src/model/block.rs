//! One transformer block, forward and then backward in mirror order.
//!
//! ```text
//! pre-norm (GPT-2):                            post-norm (the course):
//!   res_attn = x + drop(proj(attn(ln_1(x))))     res_attn = x + drop(proj(attn(x)))
//!   res_mlp = res_attn                           h = ln_1(res_attn)
//!             + drop(mlp(ln_2(res_attn)))        res_mlp = h + drop(mlp(h))
//!   output = res_mlp                             output = ln_2(res_mlp)
//!
//! attn(h) = attention(c_attn(h))               mlp(h) = c_proj(act(c_fc(h)))
//! ```
//! A Llama-family block is the pre-norm one with RMS norms, and (its
//! family's recipe, [`super::family`]):
//! ```text
//! attn(h) = attention(rope(c_attn(h)))         rope turns the query and key heads
//! mlp(h) = down(silu(gate(h)) * up(h))         c_fc = [gate | up], one product
//! ```
//! with grouped-query attention (`n_kv_head` key/value heads). When it
//! decodes, the rotated keys and values of the new positions are copied
//! into its KV cache (`kv_cache`), which attention then reads.
//! Backward walks the same steps in reverse. The residual stream's gradient
//! `d_res` comes in as the gradient of the block's output and leaves as the
//! gradient of its input; a skip connection passes it on unchanged and each
//! branch's layer norm adds its part (layer-norm backward accumulates).
//!
//! Dropout sites are numbered `1 + 3l` (attention weights), `2 + 3l` (the
//! attention branch) and `3 + 3l` (the feed-forward branch); site 0 is the
//! embedding.

use super::activations::{ActTensors, NormActs, Rows, Scratch, Tensor};
use super::config::Norm;
use super::family::Mlp;
use super::gpt::{Model, Pass};
use super::grads::Grads;
use super::params::NormParams;
use crate::backend::{AttentionDims, Backend, Dropout, RopeDims};

/// Block `l`'s output rows: the residual stream after the feed-forward
/// (pre-norm) or its normalisation (post-norm).
pub(super) fn output<'a, B: Backend>(
    res_mlp: &'a Tensor<B>,
    ln_2_out: &'a Tensor<B>,
    norm: Norm,
    l: usize,
    rows: Rows,
) -> B::View<'a> {
    match norm {
        Norm::Pre => res_mlp.at(l, rows),
        Norm::Post => ln_2_out.at(l, rows),
    }
}

/// Block `l`'s input rows: the embeddings, or block `l - 1`'s output.
fn input<'a, B: Backend>(
    encoded: &'a Tensor<B>,
    res_mlp: &'a Tensor<B>,
    ln_2_out: &'a Tensor<B>,
    norm: Norm,
    l: usize,
    rows: Rows,
) -> B::View<'a> {
    match l {
        0 => encoded.at(0, rows),
        _ => output(res_mlp, ln_2_out, norm, l - 1, rows),
    }
}

/// Which scratch tensor holds the gradient flowing into a branch.
#[derive(Clone, Copy)]
enum Incoming {
    /// `d_res`: pre-norm, where the skip connection passes the stream's gradient on.
    Res,
    /// `d_sum`: post-norm, the gradient of the residual sum under a layer norm.
    Sum,
}

/// The gradient of a residual branch's output before its dropout: the
/// incoming gradient (`d_res` or `d_sum`) itself when there is no dropout,
/// else its masked copy in `d_branch`.
fn branch_grad<'a, B: Backend>(
    be: &B,
    (d_res, d_sum, d_branch): (&'a Tensor<B>, &'a Tensor<B>, &'a mut Tensor<B>),
    incoming: Incoming,
    rows: Rows,
    dropout: Option<Dropout>,
) -> B::View<'a> {
    let d_out = match incoming {
        Incoming::Res => d_res,
        Incoming::Sum => d_sum,
    };
    match dropout {
        None => d_out.at(0, rows),
        Some(d) => {
            be.copy(d_branch.at_mut(0, rows), d_out.at(0, rows));
            be.dropout(d_branch.at_mut(0, rows), d);
            d_branch.at(0, rows)
        }
    }
}

/// Normalise rows of `inp` into layer `l`'s slot of `acts`.
fn norm_forward<B: Backend>(
    pass: &Pass<B>,
    p: &NormParams,
    acts: &mut NormActs<Tensor<B>>,
    l: usize,
    inp: B::View<'_>,
    c: usize,
) {
    let rows = pass.window.rows();
    let NormActs { out, mean, rstd } = acts;
    let (out, mean, rstd) = (
        out.at_mut(l, rows),
        mean.at_mut(l, rows),
        rstd.at_mut(l, rows),
    );
    p.forward(pass.be, pass.params, out, mean, rstd, inp, rows.len(), c);
}

/// Layer norm backward: `dinp += d(ln(inp))` from `dout`, with layer `l`'s statistics.
#[allow(clippy::too_many_arguments)]
fn norm_backward<B: Backend>(
    pass: &Pass<B>,
    p: &NormParams,
    grads: &mut Grads<B>,
    saved: &NormActs<Tensor<B>>,
    l: usize,
    (dinp, dout): (B::ViewMut<'_>, B::View<'_>),
    inp: B::View<'_>,
    c: usize,
) {
    let rows = pass.window.rows();
    let stats = (saved.mean.at(l, rows), saved.rstd.at(l, rows));
    p.backward(
        pass.be,
        pass.params,
        grads,
        dinp,
        dout,
        inp,
        stats,
        rows.len(),
        c,
    );
}

impl Model {
    /// The family's feed-forward (see [`super::family`]).
    fn mlp(&self) -> Mlp {
        self.config
            .family()
            .recipe
            .map_or(Mlp::Activated, |r| r.mlp)
    }

    fn attention_dims<B: Backend>(&self, pass: &Pass<B>) -> AttentionDims {
        let w = pass.window;
        self.attention_dims_at(w.b, w.t, w.pos, pass.kv_cache)
    }

    /// Attention over `b` sequences of `t` queries after `pos` cached
    /// positions, its keys and values in `qkv` or (`kv_cache`) in the cache.
    fn attention_dims_at(&self, b: usize, t: usize, pos: usize, kv_cache: bool) -> AttentionDims {
        let cfg = &self.config;
        let fused = AttentionDims::fused(b, t, pos, cfg.n_embd, cfg.n_head, cfg.n_kv_head());
        match kv_cache {
            false => fused,
            true => AttentionDims {
                kv_stride: 2 * fused.kv_width(),
                k_offset: 0,
                ..fused
            },
        }
    }

    /// Which rows of `qkv` RoPE turns, and its query and key heads.
    fn rope_dims<B: Backend>(&self, pass: &Pass<B>) -> RopeDims {
        let w = pass.window;
        self.rope_dims_at(w.n(), w.t, w.pos)
    }

    /// `rows` rows of `qkv`, row `r` at position `pos + r % t`.
    fn rope_dims_at(&self, rows: usize, t: usize, pos: usize) -> RopeDims {
        let cfg = &self.config;
        RopeDims {
            rows,
            t,
            pos,
            heads: cfg.n_head + cfg.n_kv_head(),
            head_size: cfg.head_size(),
            row_stride: cfg.qkv_width(),
        }
    }

    /// Llama family: rotate the new rows' queries and keys, and when
    /// decoding copy their keys and values into the cache.
    fn rotate_and_cache<B: Backend>(
        &self,
        pass: &Pass<B>,
        l: usize,
        qkv: &mut Tensor<B>,
        kv_cache: &mut Tensor<B>,
    ) {
        let Some(table) = &pass.rope else { return };
        let rows = pass.window.rows();
        let table = B::view(table, 0..B::len(table));
        pass.be
            .rope_forward(qkv.at_mut(l, rows), table, self.rope_dims(pass));
        if pass.kv_cache {
            let (c, width) = (self.config.n_embd, self.config.qkv_width());
            let dims = (rows.len(), width - c);
            pass.be
                .copy_columns(kv_cache.at_mut(l, rows), qkv.at(l, rows), dims, (width, c));
        }
    }

    /// Block `l` over the window's rows, reading its input and writing its
    /// activations (with `pos > 0`, the earlier rows of `qkv` are the cache).
    pub(super) fn block_forward<B: Backend>(
        &self,
        pass: &Pass<B>,
        l: usize,
        a: &mut ActTensors<Tensor<B>>,
    ) {
        self.attention_forward(pass, l, a);
        self.mlp_forward(pass, l, a);
    }

    /// `res_attn = x + drop(proj(attn(ln_1(x) or x)))`.
    fn attention_forward<B: Backend>(
        &self,
        pass: &Pass<B>,
        l: usize,
        a: &mut ActTensors<Tensor<B>>,
    ) {
        self.attention_input(pass, l, a);
        let ActTensors {
            qkv,
            kv_cache,
            att_lse,
            atty,
            ..
        } = a;
        self.rotate_and_cache(pass, l, qkv, kv_cache);
        let (w, dims) = (pass.window, self.attention_dims(pass));
        let (rows, seen) = (w.rows(), 0..w.b * dims.keys());
        let kv = match pass.kv_cache {
            true => kv_cache.at(l, seen),
            false => qkv.at(l, seen),
        };
        let drop = self.dropout(pass.mode, 1 + 3 * l as u64);
        let (out, lse) = (atty.at_mut(l, rows), att_lse.at_mut(l, 0..w.n()));
        pass.be
            .attention_forward(out, lse, qkv.at(l, rows), kv, dims, drop);
        self.attention_output(pass, l, a);
    }

    /// Block `l` for a decoding batch: one new position per sequence (the
    /// window's rows are the sequences), each attending over its own KV
    /// cache `caches[i]` at position `positions[i]`, where its new keys and
    /// values are written first. Everything but attention (and RoPE, which
    /// needs each row's position) is the same as [`Model::block_forward`],
    /// over all the sequences' rows at once.
    pub(super) fn block_decode<B: Backend>(
        &self,
        pass: &Pass<B>,
        l: usize,
        a: &mut ActTensors<Tensor<B>>,
        caches: &mut [&mut ActTensors<Tensor<B>>],
        positions: &[usize],
    ) {
        self.attention_input(pass, l, a);
        for (i, (cache, &pos)) in caches.iter_mut().zip(positions).enumerate() {
            self.append_to_cache(pass, l, (a, i), cache, pos);
        }
        let kv_cache = pass.rope.is_some();
        let kvs: Vec<_> = caches
            .iter()
            .zip(positions)
            .map(|(cache, &pos)| {
                let dims = self.attention_dims_at(1, 1, pos, kv_cache);
                let kv = match kv_cache {
                    true => cache.kv_cache.at(l, 0..dims.keys()),
                    false => cache.qkv.at(l, 0..dims.keys()),
                };
                (kv, dims)
            })
            .collect();
        let rows = pass.window.rows();
        let (out, lse) = (a.atty.at_mut(l, rows), a.att_lse.at_mut(l, rows));
        pass.be.attention_decode(out, lse, a.qkv.at(l, rows), &kvs);
        self.attention_output(pass, l, a);
        self.mlp_forward(pass, l, a);
    }

    /// Row `i` of a decoding batch at position `pos`: rotate its query and
    /// key (Llama), and append its keys and values to its sequence's cache
    /// (a Llama caches only the KV heads, in `kv_cache`; a GPT keeps `qkv`).
    fn append_to_cache<B: Backend>(
        &self,
        pass: &Pass<B>,
        l: usize,
        (a, i): (&mut ActTensors<Tensor<B>>, usize),
        cache: &mut ActTensors<Tensor<B>>,
        pos: usize,
    ) {
        let (be, row, new) = (pass.be, i..i + 1, pos..pos + 1);
        let Some(table) = &pass.rope else {
            return be.copy(cache.qkv.at_mut(l, new), a.qkv.at(l, row));
        };
        let table = B::view(table, 0..B::len(table));
        be.rope_forward(
            a.qkv.at_mut(l, row.clone()),
            table,
            self.rope_dims_at(1, 1, pos),
        );
        let (c, width) = (self.config.n_embd, self.config.qkv_width());
        let dims = (1, width - c);
        be.copy_columns(
            cache.kv_cache.at_mut(l, new),
            a.qkv.at(l, row),
            dims,
            (width, c),
        );
    }

    /// Attention's input: `qkv = c_attn(ln_1(x) or x)` for the window's rows.
    fn attention_input<B: Backend>(&self, pass: &Pass<B>, l: usize, a: &mut ActTensors<Tensor<B>>) {
        let (norm, c, p) = (self.config.norm, self.config.n_embd, &self.layout.blocks[l]);
        let rows = pass.window.rows();
        let ActTensors {
            encoded,
            ln_1,
            qkv,
            ln_2,
            res_mlp,
            ..
        } = a;
        let x = input(encoded, res_mlp, &ln_2.out, norm, l, rows);
        if norm == Norm::Pre {
            norm_forward(pass, &p.ln_1, ln_1, l, x, c);
        }
        let attn_in = match norm {
            Norm::Pre => ln_1.out.at(l, rows),
            Norm::Post => x,
        };
        let out = qkv.at_mut(l, rows);
        p.c_attn
            .forward(pass.be, pass.weights(), out, attn_in, rows.len());
    }

    /// Attention's output: `res_attn = x + drop(proj(atty))`.
    fn attention_output<B: Backend>(
        &self,
        pass: &Pass<B>,
        l: usize,
        a: &mut ActTensors<Tensor<B>>,
    ) {
        let (be, params, w) = (pass.be, pass.weights(), pass.window);
        let (norm, p) = (self.config.norm, &self.layout.blocks[l]);
        let (rows, n, site) = (w.rows(), w.n(), 1 + 3 * l as u64);
        let ActTensors {
            encoded,
            atty,
            res_attn,
            ln_2,
            res_mlp,
            ..
        } = a;
        let x = input(encoded, res_mlp, &ln_2.out, norm, l, rows);
        p.attn_proj
            .forward(be, params, res_attn.at_mut(l, rows), atty.at(l, rows), n);
        be.residual(
            res_attn.at_mut(l, rows),
            x,
            self.dropout(pass.mode, site + 1),
        );
    }

    /// `res_mlp = h + drop(mlp(ln_2(h) or h))`, with `h = res_attn`
    /// (pre-norm) or `ln_1(res_attn)` (post-norm); post-norm then `ln_2(res_mlp)`.
    fn mlp_forward<B: Backend>(&self, pass: &Pass<B>, l: usize, a: &mut ActTensors<Tensor<B>>) {
        let (be, params, w) = (pass.be, pass.weights(), pass.window);
        let (norm, c, p) = (self.config.norm, self.config.n_embd, &self.layout.blocks[l]);
        let (rows, n, site) = (w.rows(), w.n(), 1 + 3 * l as u64);
        let ActTensors {
            ln_1,
            res_attn,
            ln_2,
            fc,
            fc_act,
            res_mlp,
            ..
        } = a;
        let (mlp_in, skip) = match norm {
            Norm::Pre => {
                norm_forward(pass, &p.ln_2, ln_2, l, res_attn.at(l, rows), c);
                (ln_2.out.at(l, rows), res_attn.at(l, rows))
            }
            Norm::Post => {
                norm_forward(pass, &p.ln_1, ln_1, l, res_attn.at(l, rows), c);
                (ln_1.out.at(l, rows), ln_1.out.at(l, rows))
            }
        };
        let (pre, act) = (fc.at_mut(l, rows), fc_act.at_mut(l, rows));
        match self.mlp() {
            Mlp::SwiGlu => {
                p.c_fc.forward(be, params, pre, mlp_in, n);
                be.swiglu_forward(act, fc.at(l, rows), n, self.config.ffn_width());
            }
            Mlp::Activated => {
                p.c_fc
                    .forward_activated(be, params, pre, act, mlp_in, n, self.config.activation)
            }
        }
        p.mlp_proj
            .forward(be, params, res_mlp.at_mut(l, rows), fc_act.at(l, rows), n);
        be.residual(
            res_mlp.at_mut(l, rows),
            skip,
            self.dropout(pass.mode, site + 2),
        );
        if norm == Norm::Post {
            norm_forward(pass, &p.ln_2, ln_2, l, res_mlp.at(l, rows), c);
        }
    }

    /// Block `l` backward: `s.d_res` arrives as d(block output) and leaves as
    /// d(block input); parameter gradients accumulate into `grads`.
    pub(super) fn block_backward<B: Backend>(
        &self,
        pass: &Pass<B>,
        l: usize,
        grads: &mut Grads<B>,
        a: &ActTensors<Tensor<B>>,
        s: &mut Scratch<Tensor<B>>,
    ) {
        match self.config.norm {
            Norm::Pre => self.pre_norm_backward(pass, l, grads, a, s),
            Norm::Post => self.post_norm_backward(pass, l, grads, a, s),
        }
    }

    fn pre_norm_backward<B: Backend>(
        &self,
        pass: &Pass<B>,
        l: usize,
        grads: &mut Grads<B>,
        a: &ActTensors<Tensor<B>>,
        s: &mut Scratch<Tensor<B>>,
    ) {
        let (c, p, rows) = (
            self.config.n_embd,
            &self.layout.blocks[l],
            pass.window.rows(),
        );
        let x = input(&a.encoded, &a.res_mlp, &a.ln_2.out, Norm::Pre, l, rows);
        // d_res = d(res_mlp); the skip connection passes it on unchanged.
        self.mlp_backward(pass, l, grads, a, s, Incoming::Res, a.ln_2.out.at(l, rows));
        let d = (s.d_res.at_mut(0, rows), s.d_ln.at(0, rows));
        norm_backward(
            pass,
            &p.ln_2,
            grads,
            &a.ln_2,
            l,
            d,
            a.res_attn.at(l, rows),
            c,
        );
        // d_res = d(res_attn), the skip again.
        self.attention_backward(pass, l, grads, a, s, Incoming::Res, a.ln_1.out.at(l, rows));
        let d = (s.d_res.at_mut(0, rows), s.d_ln.at(0, rows));
        norm_backward(pass, &p.ln_1, grads, &a.ln_1, l, d, x, c);
    }

    fn post_norm_backward<B: Backend>(
        &self,
        pass: &Pass<B>,
        l: usize,
        grads: &mut Grads<B>,
        a: &ActTensors<Tensor<B>>,
        s: &mut Scratch<Tensor<B>>,
    ) {
        let (be, c, p) = (pass.be, self.config.n_embd, &self.layout.blocks[l]);
        let rows = pass.window.rows();
        let x = input(&a.encoded, &a.res_mlp, &a.ln_2.out, Norm::Post, l, rows);
        // d_res = d(ln_2 output); d_sum becomes d(res_mlp).
        be.fill(s.d_sum.at_mut(0, rows), 0.0);
        let d = (s.d_sum.at_mut(0, rows), s.d_res.at(0, rows));
        norm_backward(
            pass,
            &p.ln_2,
            grads,
            &a.ln_2,
            l,
            d,
            a.res_mlp.at(l, rows),
            c,
        );
        self.mlp_backward(pass, l, grads, a, s, Incoming::Sum, a.ln_1.out.at(l, rows));
        // d(ln_1 output): skip + branch.
        be.add(
            s.d_res.at_mut(0, rows),
            s.d_sum.at(0, rows),
            s.d_ln.at(0, rows),
        );
        be.fill(s.d_sum.at_mut(0, rows), 0.0);
        let d = (s.d_sum.at_mut(0, rows), s.d_res.at(0, rows));
        norm_backward(
            pass,
            &p.ln_1,
            grads,
            &a.ln_1,
            l,
            d,
            a.res_attn.at(l, rows),
            c,
        );
        self.attention_backward(pass, l, grads, a, s, Incoming::Sum, x);
        // d(block input): skip + branch.
        be.add(
            s.d_res.at_mut(0, rows),
            s.d_sum.at(0, rows),
            s.d_ln.at(0, rows),
        );
    }

    /// Through the feed-forward branch, from the gradient of its residual sum
    /// to `d_ln`, the gradient of the branch input `mlp_in`.
    #[allow(clippy::too_many_arguments)]
    fn mlp_backward<B: Backend>(
        &self,
        pass: &Pass<B>,
        l: usize,
        grads: &mut Grads<B>,
        a: &ActTensors<Tensor<B>>,
        s: &mut Scratch<Tensor<B>>,
        incoming: Incoming,
        mlp_in: B::View<'_>,
    ) {
        let (be, params, p) = (pass.be, pass.weights(), &self.layout.blocks[l]);
        let (rows, n) = (pass.window.rows(), pass.window.n());
        let Scratch {
            d_res,
            d_sum,
            d_branch,
            d_ln,
            d_fc,
            d_fc_act,
            ..
        } = s;
        let drop = self.dropout(pass.mode, 3 + 3 * l as u64);
        let d_branch = branch_grad(be, (d_res, d_sum, d_branch), incoming, rows, drop);
        let (fc, fc_act) = (a.fc.at(l, rows), a.fc_act.at(l, rows));
        if self.mlp() == Mlp::SwiGlu {
            let d_act = d_fc_act.at_mut(0, rows);
            p.mlp_proj
                .backward(be, params, grads, d_act, d_branch, fc_act, n, None);
            let (d_fc, d_act) = (d_fc.at_mut(0, rows), d_fc_act.at(0, rows));
            be.swiglu_backward(d_fc, d_act, fc, n, self.config.ffn_width());
        } else {
            let through = Some((self.config.activation, fc));
            let d_fc = d_fc.at_mut(0, rows);
            p.mlp_proj
                .backward(be, params, grads, d_fc, d_branch, fc_act, n, through);
        }
        let (d_ln, d_fc) = (d_ln.at_mut(0, rows), d_fc.at(0, rows));
        p.c_fc
            .backward(be, params, grads, d_ln, d_fc, mlp_in, n, None);
    }

    /// Through the attention branch, from the gradient of its residual sum
    /// to `d_ln`, the gradient of the branch input `attn_in`.
    #[allow(clippy::too_many_arguments)]
    fn attention_backward<B: Backend>(
        &self,
        pass: &Pass<B>,
        l: usize,
        grads: &mut Grads<B>,
        a: &ActTensors<Tensor<B>>,
        s: &mut Scratch<Tensor<B>>,
        incoming: Incoming,
        attn_in: B::View<'_>,
    ) {
        let (be, params, p) = (pass.be, pass.weights(), &self.layout.blocks[l]);
        let (rows, n, site) = (pass.window.rows(), pass.window.n(), 1 + 3 * l as u64);
        let Scratch {
            d_res,
            d_sum,
            d_branch,
            d_ln,
            d_atty,
            d_qkv,
            ..
        } = s;
        let drop = self.dropout(pass.mode, site + 1);
        let d_branch = branch_grad(be, (d_res, d_sum, d_branch), incoming, rows, drop);
        let (d_atty_v, atty) = (d_atty.at_mut(0, rows), a.atty.at(l, rows));
        p.attn_proj
            .backward(be, params, grads, d_atty_v, d_branch, atty, n, None);
        let (qkv, lse) = (a.qkv.at(l, rows), a.att_lse.at(l, 0..n));
        let (dims, drop) = (self.attention_dims(pass), self.dropout(pass.mode, site));
        be.attention_backward(
            d_qkv.at_mut(0, rows),
            d_atty.at(0, rows),
            qkv,
            lse,
            dims,
            drop,
        );
        if let Some(table) = &pass.rope {
            let table = B::view(table, 0..B::len(table));
            be.rope_backward(d_qkv.at_mut(0, rows), table, self.rope_dims(pass));
        }
        let (d_ln, d_qkv) = (d_ln.at_mut(0, rows), d_qkv.at(0, rows));
        p.c_attn
            .backward(be, params, grads, d_ln, d_qkv, attn_in, n, None);
    }
}
