//! Layers the GPU has no kernels for yet run on the host: their inputs are
//! downloaded, the CPU backend's code runs on them (so the results are the
//! CPU's), and their outputs are uploaded. Correct and slow; these are the
//! Llama family's layers (RMSNorm, RoPE, SwiGLU, the KV-cache copy) and
//! attention in layouts other than GPT's fused one (grouped-query heads, a
//! separate cache). Each is a kernel to write (issue #13).

use super::{Cuda, DevView, DevViewMut};
use crate::backend::cpu::Cpu;
use crate::backend::{AttentionDims, Backend, Dropout, RopeDims};

/// GPT's layout, the one the attention kernels take: as many key/value heads
/// as query heads, side by side with the queries in one `qkv` row.
pub fn fused_heads(d: AttentionDims) -> bool {
    d == AttentionDims::fused(d.b, d.t, d.pos, d.c, d.n_head, d.n_head)
}

impl Cuda {
    fn fetch(&self, v: DevView<'_>) -> Vec<f32> {
        let mut host = vec![0.0; v.len];
        self.to_host(v.addr, &mut host);
        host
    }

    fn fetch_mut(&self, v: &DevViewMut<'_>) -> Vec<f32> {
        let mut host = vec![0.0; v.len];
        self.to_host(v.addr, &mut host);
        host
    }

    fn store(&self, v: DevViewMut<'_>, host: &[f32]) {
        self.to_device(v.addr, host)
            .unwrap_or_else(|e| panic!("CUDA: could not copy a result to the GPU: {e}"));
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn rmsnorm_forward_on_host(
        &self,
        (out, rstd): (DevViewMut<'_>, DevViewMut<'_>),
        inp: DevView<'_>,
        weight: DevView<'_>,
        n: usize,
        c: usize,
        eps: f32,
    ) {
        let (mut o, mut r) = (self.fetch_mut(&out), self.fetch_mut(&rstd));
        let (inp, weight) = (self.fetch(inp), self.fetch(weight));
        Cpu::new().rmsnorm_forward(&mut o, &mut r, &inp, &weight, n, c, eps);
        self.store(out, &o);
        self.store(rstd, &r);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn rmsnorm_backward_on_host(
        &self,
        (dinp, dweight): (DevViewMut<'_>, Option<DevViewMut<'_>>),
        dout: DevView<'_>,
        inp: DevView<'_>,
        weight: DevView<'_>,
        rstd: DevView<'_>,
        (n, c): (usize, usize),
    ) {
        let mut di = self.fetch_mut(&dinp);
        let mut dw = dweight.as_ref().map(|d| self.fetch_mut(d));
        let (dout, inp, weight, rstd) = (
            self.fetch(dout),
            self.fetch(inp),
            self.fetch(weight),
            self.fetch(rstd),
        );
        Cpu::new().rmsnorm_backward(
            &mut di,
            dw.as_deref_mut(),
            &dout,
            &inp,
            &weight,
            &rstd,
            n,
            c,
        );
        self.store(dinp, &di);
        if let (Some(dst), Some(host)) = (dweight, dw) {
            self.store(dst, &host);
        }
    }

    /// RoPE forward (`backward: false`) or backward, in place.
    pub(super) fn rope_on_host(
        &self,
        x: DevViewMut<'_>,
        table: DevView<'_>,
        dims: RopeDims,
        backward: bool,
    ) {
        let (mut h, table) = (self.fetch_mut(&x), self.fetch(table));
        match backward {
            false => Cpu::new().rope_forward(&mut h, &table, dims),
            true => Cpu::new().rope_backward(&mut h, &table, dims),
        }
        self.store(x, &h);
    }

    pub(super) fn swiglu_forward_on_host(
        &self,
        out: DevViewMut<'_>,
        fc: DevView<'_>,
        n: usize,
        i: usize,
    ) {
        let (mut o, fc) = (self.fetch_mut(&out), self.fetch(fc));
        Cpu::new().swiglu_forward(&mut o, &fc, n, i);
        self.store(out, &o);
    }

    pub(super) fn swiglu_backward_on_host(
        &self,
        dfc: DevViewMut<'_>,
        dout: DevView<'_>,
        fc: DevView<'_>,
        n: usize,
        i: usize,
    ) {
        let (mut d, dout, fc) = (self.fetch_mut(&dfc), self.fetch(dout), self.fetch(fc));
        Cpu::new().swiglu_backward(&mut d, &dout, &fc, n, i);
        self.store(dfc, &d);
    }

    pub(super) fn copy_columns_on_host(
        &self,
        dst: DevViewMut<'_>,
        src: DevView<'_>,
        rows_cols: (usize, usize),
        src_stride_first: (usize, usize),
    ) {
        let (mut d, src) = (self.fetch_mut(&dst), self.fetch(src));
        Cpu::new().copy_columns(&mut d, &src, rows_cols, src_stride_first);
        self.store(dst, &d);
    }

    pub(super) fn attention_forward_on_host(
        &self,
        (out, lse): (DevViewMut<'_>, DevViewMut<'_>),
        q: DevView<'_>,
        kv: DevView<'_>,
        dims: AttentionDims,
        dropout: Option<Dropout>,
    ) {
        let (mut o, mut l) = (self.fetch_mut(&out), self.fetch_mut(&lse));
        let (q, kv) = (self.fetch(q), self.fetch(kv));
        Cpu::new().attention_forward(&mut o, &mut l, &q, &kv, dims, dropout);
        self.store(out, &o);
        self.store(lse, &l);
    }

    pub(super) fn attention_backward_on_host(
        &self,
        dqkv: DevViewMut<'_>,
        (dout, qkv, lse): (DevView<'_>, DevView<'_>, DevView<'_>),
        dims: AttentionDims,
        dropout: Option<Dropout>,
    ) {
        let mut d = self.fetch_mut(&dqkv);
        let (dout, qkv, lse) = (self.fetch(dout), self.fetch(qkv), self.fetch(lse));
        Cpu::new().attention_backward(&mut d, &dout, &qkv, &lse, dims, dropout);
        self.store(dqkv, &d);
    }
}
