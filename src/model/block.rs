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
//! Backward walks the same steps in reverse. The residual stream's gradient
//! `d_res` comes in as the gradient of the block's output and leaves as the
//! gradient of its input; a skip connection passes it on unchanged and each
//! branch's layer norm adds its part (layer-norm backward accumulates).
//!
//! Dropout sites are numbered `1 + 3l` (attention weights), `2 + 3l` (the
//! attention branch) and `3 + 3l` (the feed-forward branch); site 0 is the
//! embedding.

use super::activations::{ActTensors, NormActs, Scratch, Tensor, Window};
use super::config::Norm;
use super::gpt::{Mode, Model};
use crate::backend::{AttentionDims, Backend, Dropout};
use std::ops::Range;

/// Block `l`'s output rows: the residual stream after the feed-forward
/// (pre-norm) or its normalisation (post-norm).
pub(super) fn output<'a, B: Backend>(
    res_mlp: &'a Tensor<B>,
    ln_2_out: &'a Tensor<B>,
    norm: Norm,
    l: usize,
    rows: Range<usize>,
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
    rows: Range<usize>,
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

/// The gradient of a residual branch's output before its dropout: `d_out`
/// itself when there is no dropout, else its masked copy in `d_branch`.
fn through_dropout<'a, B: Backend>(
    be: &B,
    d_out: &'a Tensor<B>,
    d_branch: &'a mut Tensor<B>,
    rows: Range<usize>,
    dropout: Option<Dropout>,
) -> B::View<'a> {
    match dropout {
        None => d_out.at(0, rows),
        Some(d) => {
            be.copy(d_branch.at_mut(0, rows.clone()), d_out.at(0, rows.clone()));
            be.dropout(d_branch.at_mut(0, rows.clone()), d);
            d_branch.at(0, rows)
        }
    }
}

/// The layer norm `stats` (mean, rstd) of layer `l`'s rows.
fn stats<B: Backend>(
    norm: &NormActs<Tensor<B>>,
    l: usize,
    rows: Range<usize>,
) -> (B::View<'_>, B::View<'_>) {
    (norm.mean.at(l, rows.clone()), norm.rstd.at(l, rows))
}

impl Model {
    fn attention_dims(&self, w: Window) -> AttentionDims {
        AttentionDims {
            b: w.b,
            t: w.t,
            pos: w.pos,
            c: self.config.n_embd,
            n_head: self.config.n_head,
        }
    }

    /// Block `l` over the window's rows, reading its input and writing its
    /// activations (with `pos > 0`, the earlier rows of `qkv` are the cache).
    pub(super) fn block_forward<B: Backend>(
        &self,
        be: &B,
        l: usize,
        params: &B::Buf,
        a: &mut ActTensors<Tensor<B>>,
        w: Window,
        mode: Mode,
    ) {
        self.attention_forward(be, l, params, a, w, mode);
        self.mlp_forward(be, l, params, a, w, mode);
    }

    /// `res_attn = x + drop(proj(attn(ln_1(x) or x)))`.
    fn attention_forward<B: Backend>(
        &self,
        be: &B,
        l: usize,
        params: &B::Buf,
        a: &mut ActTensors<Tensor<B>>,
        w: Window,
        mode: Mode,
    ) {
        let (norm, c, p) = (self.config.norm, self.config.n_embd, &self.layout.blocks[l]);
        let (rows, n, site) = (w.rows(), w.n(), 1 + 3 * l as u64);
        let ActTensors {
            encoded,
            ln_1,
            qkv,
            att_lse,
            atty,
            res_attn,
            ln_2,
            res_mlp,
            ..
        } = a;
        let x = input(encoded, res_mlp, &ln_2.out, norm, l, rows.clone());
        if norm == Norm::Pre {
            let NormActs { out, mean, rstd } = ln_1;
            let (mean, rstd) = (mean.at_mut(l, rows.clone()), rstd.at_mut(l, rows.clone()));
            p.ln_1
                .forward(be, params, out.at_mut(l, rows.clone()), mean, rstd, x, n, c);
        }
        let attn_in = match norm {
            Norm::Pre => ln_1.out.at(l, rows.clone()),
            Norm::Post => x,
        };
        p.c_attn
            .forward(be, params, qkv.at_mut(l, rows.clone()), attn_in, n);
        let dims = self.attention_dims(w);
        let seen = qkv.at(l, 0..w.b * dims.keys());
        let drop = self.dropout(mode, site);
        be.attention_forward(
            atty.at_mut(l, rows.clone()),
            att_lse.at_mut(l, 0..n),
            seen,
            dims,
            drop,
        );
        p.attn_proj.forward(
            be,
            params,
            res_attn.at_mut(l, rows.clone()),
            atty.at(l, rows.clone()),
            n,
        );
        be.residual(res_attn.at_mut(l, rows), x, self.dropout(mode, site + 1));
    }

    /// `res_mlp = h + drop(mlp(ln_2(h) or h))`, with `h = res_attn`
    /// (pre-norm) or `ln_1(res_attn)` (post-norm); post-norm then `ln_2(res_mlp)`.
    fn mlp_forward<B: Backend>(
        &self,
        be: &B,
        l: usize,
        params: &B::Buf,
        a: &mut ActTensors<Tensor<B>>,
        w: Window,
        mode: Mode,
    ) {
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
        let normed = match norm {
            Norm::Pre => &mut *ln_2,
            Norm::Post => &mut *ln_1,
        };
        let (mean, rstd) = (
            normed.mean.at_mut(l, rows.clone()),
            normed.rstd.at_mut(l, rows.clone()),
        );
        let res = res_attn.at(l, rows.clone());
        let ln = if norm == Norm::Pre { &p.ln_2 } else { &p.ln_1 };
        ln.forward(
            be,
            params,
            normed.out.at_mut(l, rows.clone()),
            mean,
            rstd,
            res,
            n,
            c,
        );
        let (mlp_in, skip) = match norm {
            Norm::Pre => (ln_2.out.at(l, rows.clone()), res_attn.at(l, rows.clone())),
            Norm::Post => (ln_1.out.at(l, rows.clone()), ln_1.out.at(l, rows.clone())),
        };
        let (pre, act) = (fc.at_mut(l, rows.clone()), fc_act.at_mut(l, rows.clone()));
        p.c_fc
            .forward_activated(be, params, pre, act, mlp_in, n, self.config.activation);
        p.mlp_proj.forward(
            be,
            params,
            res_mlp.at_mut(l, rows.clone()),
            fc_act.at(l, rows.clone()),
            n,
        );
        be.residual(
            res_mlp.at_mut(l, rows.clone()),
            skip,
            self.dropout(mode, site + 2),
        );
        if norm == Norm::Post {
            let NormActs { out, mean, rstd } = ln_2;
            let (mean, rstd) = (mean.at_mut(l, rows.clone()), rstd.at_mut(l, rows.clone()));
            p.ln_2.forward(
                be,
                params,
                out.at_mut(l, rows.clone()),
                mean,
                rstd,
                res_mlp.at(l, rows),
                n,
                c,
            );
        }
    }

    /// Block `l` backward: `s.d_res` arrives as d(block output) and leaves as
    /// d(block input); parameter gradients accumulate into `grads`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn block_backward<B: Backend>(
        &self,
        be: &B,
        l: usize,
        params: &B::Buf,
        grads: &mut B::Buf,
        a: &ActTensors<Tensor<B>>,
        s: &mut Scratch<Tensor<B>>,
        w: Window,
        mode: Mode,
    ) {
        let (c, p, n) = (self.config.n_embd, &self.layout.blocks[l], w.n());
        let (rows, norm) = (w.rows(), self.config.norm);
        let x = input(&a.encoded, &a.res_mlp, &a.ln_2.out, norm, l, rows.clone());
        let (ln_1, ln_2) = (
            stats(&a.ln_1, l, rows.clone()),
            stats(&a.ln_2, l, rows.clone()),
        );
        match norm {
            Norm::Pre => {
                // d_res = d(res_mlp); the skip connection passes it on unchanged.
                self.mlp_backward(
                    be,
                    l,
                    params,
                    grads,
                    a,
                    s,
                    Incoming::Res,
                    a.ln_2.out.at(l, rows.clone()),
                    w,
                    mode,
                );
                let (d_res, d_ln) = (s.d_res.at_mut(0, rows.clone()), s.d_ln.at(0, rows.clone()));
                p.ln_2.backward(
                    be,
                    params,
                    grads,
                    d_res,
                    d_ln,
                    a.res_attn.at(l, rows.clone()),
                    ln_2,
                    n,
                    c,
                );
                // d_res = d(res_attn), the skip again.
                self.attention_backward(
                    be,
                    l,
                    params,
                    grads,
                    a,
                    s,
                    Incoming::Res,
                    a.ln_1.out.at(l, rows.clone()),
                    w,
                    mode,
                );
                let (d_res, d_ln) = (s.d_res.at_mut(0, rows.clone()), s.d_ln.at(0, rows.clone()));
                p.ln_1
                    .backward(be, params, grads, d_res, d_ln, x, ln_1, n, c);
            }
            Norm::Post => {
                // d_res = d(ln_2 output); d_sum = d(res_mlp).
                be.fill(s.d_sum.at_mut(0, rows.clone()), 0.0);
                let (d_sum, d_res) = (s.d_sum.at_mut(0, rows.clone()), s.d_res.at(0, rows.clone()));
                p.ln_2.backward(
                    be,
                    params,
                    grads,
                    d_sum,
                    d_res,
                    a.res_mlp.at(l, rows.clone()),
                    ln_2,
                    n,
                    c,
                );
                self.mlp_backward(
                    be,
                    l,
                    params,
                    grads,
                    a,
                    s,
                    Incoming::Sum,
                    a.ln_1.out.at(l, rows.clone()),
                    w,
                    mode,
                );
                // d(ln_1 output): skip + branch.
                be.add(
                    s.d_res.at_mut(0, rows.clone()),
                    s.d_sum.at(0, rows.clone()),
                    s.d_ln.at(0, rows.clone()),
                );
                be.fill(s.d_sum.at_mut(0, rows.clone()), 0.0);
                let (d_sum, d_res) = (s.d_sum.at_mut(0, rows.clone()), s.d_res.at(0, rows.clone()));
                p.ln_1.backward(
                    be,
                    params,
                    grads,
                    d_sum,
                    d_res,
                    a.res_attn.at(l, rows.clone()),
                    ln_1,
                    n,
                    c,
                );
                self.attention_backward(be, l, params, grads, a, s, Incoming::Sum, x, w, mode);
                // d(block input): skip + branch.
                be.add(
                    s.d_res.at_mut(0, rows.clone()),
                    s.d_sum.at(0, rows.clone()),
                    s.d_ln.at(0, rows),
                );
            }
        }
    }

    /// Through the feed-forward branch, from the gradient of its residual sum
    /// to `d_ln`, the gradient of the branch input `mlp_in`.
    #[allow(clippy::too_many_arguments)]
    fn mlp_backward<B: Backend>(
        &self,
        be: &B,
        l: usize,
        params: &B::Buf,
        grads: &mut B::Buf,
        a: &ActTensors<Tensor<B>>,
        s: &mut Scratch<Tensor<B>>,
        incoming: Incoming,
        mlp_in: B::View<'_>,
        w: Window,
        mode: Mode,
    ) {
        let (p, rows, n) = (&self.layout.blocks[l], w.rows(), w.n());
        let Scratch {
            d_res,
            d_sum,
            d_branch,
            d_ln,
            d_fc,
            ..
        } = s;
        let d_out = match incoming {
            Incoming::Res => &*d_res,
            Incoming::Sum => &*d_sum,
        };
        let drop = self.dropout(mode, 3 + 3 * l as u64);
        let d_branch = through_dropout(be, d_out, d_branch, rows.clone(), drop);
        let through = Some((self.config.activation, a.fc.at(l, rows.clone())));
        let fc_act = a.fc_act.at(l, rows.clone());
        p.mlp_proj.backward(
            be,
            params,
            grads,
            d_fc.at_mut(0, rows.clone()),
            d_branch,
            fc_act,
            n,
            through,
        );
        p.c_fc.backward(
            be,
            params,
            grads,
            d_ln.at_mut(0, rows.clone()),
            d_fc.at(0, rows),
            mlp_in,
            n,
            None,
        );
    }

    /// Through the attention branch, from the gradient of its residual sum
    /// to `d_ln`, the gradient of the branch input `attn_in`.
    #[allow(clippy::too_many_arguments)]
    fn attention_backward<B: Backend>(
        &self,
        be: &B,
        l: usize,
        params: &B::Buf,
        grads: &mut B::Buf,
        a: &ActTensors<Tensor<B>>,
        s: &mut Scratch<Tensor<B>>,
        incoming: Incoming,
        attn_in: B::View<'_>,
        w: Window,
        mode: Mode,
    ) {
        let (p, rows, n) = (&self.layout.blocks[l], w.rows(), w.n());
        let site = 1 + 3 * l as u64;
        let Scratch {
            d_res,
            d_sum,
            d_branch,
            d_ln,
            d_atty,
            d_qkv,
            ..
        } = s;
        let d_out = match incoming {
            Incoming::Res => &*d_res,
            Incoming::Sum => &*d_sum,
        };
        let d_branch = through_dropout(
            be,
            d_out,
            d_branch,
            rows.clone(),
            self.dropout(mode, site + 1),
        );
        let atty = a.atty.at(l, rows.clone());
        p.attn_proj.backward(
            be,
            params,
            grads,
            d_atty.at_mut(0, rows.clone()),
            d_branch,
            atty,
            n,
            None,
        );
        let (qkv, lse) = (a.qkv.at(l, rows.clone()), a.att_lse.at(l, 0..n));
        let dims = self.attention_dims(w);
        let drop = self.dropout(mode, site);
        be.attention_backward(
            d_qkv.at_mut(0, rows.clone()),
            d_atty.at(0, rows.clone()),
            qkv,
            lse,
            dims,
            drop,
        );
        p.c_attn.backward(
            be,
            params,
            grads,
            d_ln.at_mut(0, rows.clone()),
            d_qkv.at(0, rows),
            attn_in,
            n,
            None,
        );
    }
}
