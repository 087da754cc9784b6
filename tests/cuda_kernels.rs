//! Every CUDA kernel against the CPU backend's, through the seam, on small
//! shapes chosen to hit the edges (rows that are not a multiple of a warp,
//! vocabularies wider than a block, heads of 8 and 64 channels, decoding
//! from a cache, dropout, ignored targets, transposed and accumulated
//! products, a non-finite gradient). Skipped without a GPU.
//!
//! Then the Llama family's kernels (RMSNorm, RoPE, SwiGLU, the KV-cache
//! column copy, grouped-query attention), and GPT-2's sizes: attention at
//! T = 1024, layer norm over 8192 rows, cross-entropy over 8192 x 50257.
//!
//! Tolerance: both backends compute in float32 but add in different orders
//! (warp trees against sequential loops, cuBLASLt's tiling against gemm's),
//! so values agree to float32 rounding of their sums: `|gpu - cpu| <=
//! 2e-5 + 1e-4 |cpu|` for the small shapes; the bits of dropout masks and
//! ignored positions are exact. At GPT-2's sizes the sums are 1024 keys or
//! 50257 logits long, and their rounding grows with length:
//! `1e-4 + 1e-3 |cpu|` there. TF32 products (the backend's default) round
//! their inputs to 10 mantissa bits: `1e-2` relative to the row's scale.

mod gpu;

use lmforge::backend::cpu::Cpu;
use lmforge::backend::cuda::MatmulPrecision;
use lmforge::backend::{
    Accumulate, Activation, AdamWStep, AttentionDims, Backend, Dropout, Epilogue, IGNORE_TARGET,
    Mat, ParamGroup, RopeDims,
};
use lmforge::rng::Rng;

/// The small shapes' tolerance (see the file's docs).
const TIGHT: Tol = Tol {
    atol: 2e-5,
    rtol: 1e-4,
};
/// GPT-2's sizes: sums 1024 to 50257 terms long.
const LONG_SUMS: Tol = Tol {
    atol: 1e-4,
    rtol: 1e-3,
};

#[derive(Clone, Copy)]
struct Tol {
    atol: f32,
    rtol: f32,
}

fn random(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.next_f32() * 2.0 - 1.0) * scale)
        .collect()
}

fn assert_close(what: &str, gpu: &[f32], cpu: &[f32], tol: Tol) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths");
    let mut worst = (0.0f32, 0usize);
    for (i, (g, c)) in gpu.iter().zip(cpu).enumerate() {
        let excess = if g.is_finite() && c.is_finite() {
            (g - c).abs() - (tol.atol + tol.rtol * c.abs())
        } else if (g.is_nan() && c.is_nan()) || g == c {
            0.0 // the same NaN or infinity on both
        } else {
            f32::INFINITY
        };
        if excess > worst.0 {
            worst = (excess, i);
        }
    }
    let i = worst.1;
    assert!(
        worst.0 <= 0.0,
        "{what}: element {i} is {} on the GPU, {} on the CPU",
        gpu[i],
        cpu[i]
    );
    eprintln!("{what}: {} values agree", gpu.len());
}

/// Run `case` on both backends and compare every output it returns.
fn on_both(what: &str, case: impl Fn(&dyn Runner) -> Vec<Vec<f32>>) {
    on_both_within(what, TIGHT, case)
}

/// [`on_both`] with the tolerance `tol`.
fn on_both_within(what: &str, tol: Tol, case: impl Fn(&dyn Runner) -> Vec<Vec<f32>>) {
    let Some(gpu) = gpu::cuda() else { return };
    let cpu = Cpu::new();
    let (expected, actual) = (case(&cpu), case(&gpu));
    assert_eq!(actual.len(), expected.len(), "{what}: output count");
    for (k, (a, e)) in actual.iter().zip(&expected).enumerate() {
        assert_close(&format!("{what} output {k}"), a, e, tol);
    }
}

/// The kernel cases, written once over the seam; `dyn` so one closure
/// serves both backends.
trait Runner {
    fn elementwise(&self, x: &[f32], y: &[f32]) -> Vec<Vec<f32>>;
    fn embedding(&self, c: Emb) -> Vec<Vec<f32>>;
    fn layernorm(&self, n: usize, c: usize, bias: bool, frozen: bool) -> Vec<Vec<f32>>;
    fn matmul(&self, c: Mm) -> Vec<Vec<f32>>;
    fn attention(&self, d: AttentionDims, dropout: Option<Dropout>) -> Vec<Vec<f32>>;
    fn cross_entropy(&self, n: usize, v: usize, grad: bool) -> Vec<Vec<f32>>;
    fn adamw(&self, n: usize, poison: bool) -> Vec<Vec<f32>>;
    fn kv_cache_attention(&self, d: AttentionDims) -> Vec<Vec<f32>>;
    fn rmsnorm(&self, n: usize, c: usize, frozen: bool) -> Vec<Vec<f32>>;
    fn rope(&self, d: RopeDims) -> Vec<Vec<f32>>;
    fn swiglu(&self, n: usize, i: usize) -> Vec<Vec<f32>>;
    fn copy_columns(&self, rows: usize, cols: usize, stride: usize, first: usize) -> Vec<Vec<f32>>;
}

#[derive(Clone, Copy)]
struct Emb {
    n: usize,
    t: usize,
    c: usize,
    v: usize,
    pos: usize,
    with_wpe: bool,
}

#[derive(Clone, Copy)]
struct Mm {
    m: usize,
    k: usize,
    n: usize,
    lhs_t: bool,
    rhs_t: bool,
    epilogue: u8, // 0 none, 1 bias, 2 gelu+bias, 3 relu, 4 gelu grad, 5 accumulate
    /// Floats before each operand in its buffer: views start anywhere in
    /// the flat parameter buffer, so products must not rely on alignment.
    offset: usize,
}

impl<B: Backend> Runner for B {
    fn elementwise(&self, x: &[f32], y: &[f32]) -> Vec<Vec<f32>> {
        let n = x.len();
        let d = Dropout {
            p: 0.3,
            seed: 5,
            stream: 9,
        };
        let (xa, ya) = (
            self.upload(x.to_vec()).unwrap(),
            self.upload(y.to_vec()).unwrap(),
        );
        let mut out = Vec::new();
        let mut buf = self.zeros(n).unwrap();
        self.fill(B::view_mut(&mut buf, 0..n), 1.5);
        out.push(down(self, &buf));
        self.add(
            B::view_mut(&mut buf, 0..n),
            B::view(&xa, 0..n),
            B::view(&ya, 0..n),
        );
        self.scale(B::view_mut(&mut buf, 0..n), -0.5);
        out.push(down(self, &buf));
        self.copy(B::view_mut(&mut buf, 1..n), B::view(&xa, 0..n - 1));
        self.residual(B::view_mut(&mut buf, 0..n), B::view(&ya, 0..n), Some(d));
        out.push(down(self, &buf));
        self.dropout(B::view_mut(&mut buf, 3..n), d);
        self.residual(B::view_mut(&mut buf, 0..n), B::view(&xa, 0..n), None);
        out.push(down(self, &buf));
        out
    }

    fn embedding(&self, e: Emb) -> Vec<Vec<f32>> {
        let mut rng = Rng::new(3, 1);
        let ids: Vec<u32> = (0..e.n)
            .map(|i| ((i * 7) % 5 + (i % 3) * (e.v - 5)) as u32 % e.v as u32)
            .collect();
        let wte = self.upload(random(&mut rng, e.v * e.c, 1.0)).unwrap();
        let wpe = self
            .upload(random(&mut rng, (e.pos + e.t) * e.c, 1.0))
            .unwrap();
        let dout = self.upload(random(&mut rng, e.n * e.c, 1.0)).unwrap();
        let mut idx = self.ids(e.n).unwrap();
        self.upload_ids(&mut idx, 0, &ids);
        let mut out = self.zeros(e.n * e.c).unwrap();
        let wpe_view = e.with_wpe.then(|| B::view(&wpe, 0..(e.pos + e.t) * e.c));
        let len = B::len(&out);
        self.embedding_forward(
            B::view_mut(&mut out, 0..len),
            B::ids_view(&idx, 0..e.n),
            B::view(&wte, 0..e.v * e.c),
            wpe_view,
            e.pos,
            e.t,
            e.c,
        );
        let mut dwte = self.upload(vec![0.25; e.v * e.c]).unwrap();
        let mut dwpe = self.upload(vec![-0.5; e.t * e.c]).unwrap();
        let dwpe_view = e.with_wpe.then(|| B::view_mut(&mut dwpe, 0..e.t * e.c));
        self.embedding_backward(
            B::view_mut(&mut dwte, 0..e.v * e.c),
            dwpe_view,
            B::view(&dout, 0..e.n * e.c),
            B::ids_view(&idx, 0..e.n),
            e.t,
            e.c,
        );
        vec![down(self, &out), down(self, &dwte), down(self, &dwpe)]
    }

    fn layernorm(&self, n: usize, c: usize, bias: bool, frozen: bool) -> Vec<Vec<f32>> {
        let mut rng = Rng::new(4, 2);
        let x = self
            .upload(
                random(&mut rng, n * c, 2.0)
                    .iter()
                    .map(|v| v + 0.3)
                    .collect(),
            )
            .unwrap();
        let w = self.upload(random(&mut rng, c, 1.0)).unwrap();
        let b = self.upload(random(&mut rng, c, 1.0)).unwrap();
        let dout = self.upload(random(&mut rng, n * c, 1.0)).unwrap();
        let (mut out, mut mean, mut rstd) = (
            self.zeros(n * c).unwrap(),
            self.zeros(n).unwrap(),
            self.zeros(n).unwrap(),
        );
        self.layernorm_forward(
            B::view_mut(&mut out, 0..n * c),
            B::view_mut(&mut mean, 0..n),
            B::view_mut(&mut rstd, 0..n),
            B::view(&x, 0..n * c),
            B::view(&w, 0..c),
            bias.then(|| B::view(&b, 0..c)),
            n,
            c,
            1e-5,
        );
        let mut dinp = self.upload(vec![0.125; n * c]).unwrap();
        let mut dw = self.upload(vec![0.5; 2 * c]).unwrap();
        let (dweight, dbias) = B::view_pair_mut(&mut dw, 0..c, c..2 * c);
        self.layernorm_backward(
            B::view_mut(&mut dinp, 0..n * c),
            (!frozen).then_some(dweight),
            (!frozen && bias).then_some(dbias),
            B::view(&dout, 0..n * c),
            B::view(&x, 0..n * c),
            B::view(&w, 0..c),
            B::view(&mean, 0..n),
            B::view(&rstd, 0..n),
            n,
            c,
        );
        let mut db = self.upload(vec![1.0; c]).unwrap();
        self.bias_backward(B::view_mut(&mut db, 0..c), B::view(&dout, 0..n * c), n, c);
        [&out, &mean, &rstd, &dinp, &dw, &db]
            .iter()
            .map(|b| down(self, b))
            .collect()
    }

    fn matmul(&self, c: Mm) -> Vec<Vec<f32>> {
        let mut rng = Rng::new(5, 3);
        let o = c.offset;
        let lhs = self.upload(random(&mut rng, o + c.m * c.k, 1.0)).unwrap();
        let rhs = self.upload(random(&mut rng, o + c.k * c.n, 1.0)).unwrap();
        let bias = self.upload(random(&mut rng, o + c.n, 1.0)).unwrap();
        let pre = self.upload(random(&mut rng, c.m * c.n, 2.0)).unwrap();
        let mut dst = self.upload(random(&mut rng, c.m * c.n, 1.0)).unwrap();
        let mut out = self.zeros(c.m * c.n).unwrap();
        // A transposed operand is stored the other way round and viewed through `.t()`.
        let l = if c.lhs_t {
            Mat::new(B::view(&lhs, o..o + c.m * c.k), c.k, c.m).t()
        } else {
            Mat::new(B::view(&lhs, o..o + c.m * c.k), c.m, c.k)
        };
        let r = if c.rhs_t {
            Mat::new(B::view(&rhs, o..o + c.k * c.n), c.n, c.k).t()
        } else {
            Mat::new(B::view(&rhs, o..o + c.k * c.n), c.k, c.n)
        };
        {
            let bias_view = B::view(&bias, o..o + c.n);
            let out_view = B::view_mut(&mut out, 0..c.m * c.n);
            let (acc, epilogue) = match c.epilogue {
                0 => (Accumulate::Overwrite, Epilogue::None),
                1 => (Accumulate::Overwrite, Epilogue::Bias(bias_view)),
                2 => (
                    Accumulate::Overwrite,
                    Epilogue::Activation {
                        bias: Some(bias_view),
                        act: Activation::Gelu,
                        out: out_view,
                    },
                ),
                3 => (
                    Accumulate::Overwrite,
                    Epilogue::Activation {
                        bias: None,
                        act: Activation::Relu,
                        out: out_view,
                    },
                ),
                4 => (
                    Accumulate::Overwrite,
                    Epilogue::ActivationGrad {
                        act: Activation::Gelu,
                        pre: B::view(&pre, 0..c.m * c.n),
                    },
                ),
                _ => (Accumulate::Add, Epilogue::None),
            };
            self.matmul(B::view_mut(&mut dst, 0..c.m * c.n), l, r, acc, epilogue);
        }
        vec![down(self, &dst), down(self, &out)]
    }

    fn attention(&self, d: AttentionDims, dropout: Option<Dropout>) -> Vec<Vec<f32>> {
        let mut rng = Rng::new(6, 4);
        let (keys, w) = (d.keys(), d.kv_stride);
        let qkv = self.upload(random(&mut rng, d.b * keys * w, 1.5)).unwrap();
        let dout = self.upload(random(&mut rng, d.b * d.t * d.c, 1.0)).unwrap();
        let (mut out, mut lse) = (
            self.zeros(d.b * d.t * d.c).unwrap(),
            self.zeros(d.b * d.n_head * d.t).unwrap(),
        );
        self.attention_forward(
            B::view_mut(&mut out, 0..d.b * d.t * d.c),
            B::view_mut(&mut lse, 0..d.b * d.n_head * d.t),
            B::view(&qkv, d.pos * w..(d.pos + d.b * d.t) * w),
            B::view(&qkv, 0..d.b * keys * w),
            d,
            dropout,
        );
        let mut result = vec![down(self, &out), down(self, &lse)];
        if d.pos == 0 {
            let mut dqkv = self.upload(vec![7.0; d.b * d.t * w]).unwrap();
            self.attention_backward(
                B::view_mut(&mut dqkv, 0..d.b * d.t * w),
                B::view(&dout, 0..d.b * d.t * d.c),
                B::view(&qkv, 0..d.b * d.t * w),
                B::view(&lse, 0..d.b * d.n_head * d.t),
                d,
                dropout,
            );
            result.push(down(self, &dqkv));
        }
        result
    }

    fn cross_entropy(&self, n: usize, v: usize, grad: bool) -> Vec<Vec<f32>> {
        let mut rng = Rng::new(7, 5);
        let mut logits = self.upload(random(&mut rng, n * v, 4.0)).unwrap();
        let targets: Vec<u32> = (0..n)
            .map(|i| {
                if i % 4 == 3 {
                    IGNORE_TARGET
                } else {
                    ((i * 37) % v) as u32
                }
            })
            .collect();
        let mut ids = self.ids(n).unwrap();
        self.upload_ids(&mut ids, 0, &targets);
        let mut losses = self.upload(vec![9.0; n]).unwrap();
        let mean = self.cross_entropy(
            B::view_mut(&mut losses, 0..n),
            B::view_mut(&mut logits, 0..n * v),
            B::ids_view(&ids, 0..n),
            v,
            grad.then_some(0.1),
        );
        vec![vec![mean], down(self, &losses), down(self, &logits)]
    }

    fn adamw(&self, n: usize, poison: bool) -> Vec<Vec<f32>> {
        let mut rng = Rng::new(8, 6);
        let mut grads_host = random(&mut rng, n, 3.0);
        if poison {
            grads_host[n / 2] = f32::NAN;
        }
        let mut params = self.upload(random(&mut rng, n, 1.0)).unwrap();
        let grads = self.upload(grads_host).unwrap();
        let mut m = self.upload(random(&mut rng, n, 0.1)).unwrap();
        let mut v = self
            .upload(random(&mut rng, n, 0.1).iter().map(|x| x.abs()).collect())
            .unwrap();
        let groups = [
            ParamGroup {
                range: 0..n / 3,
                decays: true,
            },
            ParamGroup {
                range: n / 3..n,
                decays: false,
            },
        ];
        let mut norms = Vec::new();
        for t in 1..=3 {
            let step = AdamWStep {
                lr: 1e-2,
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-8,
                weight_decay: 0.1,
                grad_clip: 1.0,
                t,
            };
            let mut partials = vec![0.0; n.div_ceil(lmforge::backend::NORM_CHUNK)];
            self.sum_of_squares(B::view(&grads, 0..n), &mut partials);
            let norm = lmforge::backend::norm_of(&partials);
            norms.push(norm);
            self.adamw(
                B::view_mut(&mut params, 0..n),
                B::view(&grads, 0..n),
                B::view_mut(&mut m, 0..n),
                B::view_mut(&mut v, 0..n),
                &groups,
                step,
                norm,
            );
        }
        vec![norms, down(self, &params), down(self, &m), down(self, &v)]
    }

    fn kv_cache_attention(&self, d: AttentionDims) -> Vec<Vec<f32>> {
        let mut rng = Rng::new(14, 12);
        let q_len = d.t * d.q_stride;
        let kv_len = d.keys() * d.kv_stride;
        let q = self.upload(random(&mut rng, q_len, 1.5)).unwrap();
        let kv = self.upload(random(&mut rng, kv_len, 1.5)).unwrap();
        let (mut out, mut lse) = (
            self.zeros(d.t * d.c).unwrap(),
            self.zeros(d.n_head * d.t).unwrap(),
        );
        self.attention_forward(
            B::view_mut(&mut out, 0..d.t * d.c),
            B::view_mut(&mut lse, 0..d.n_head * d.t),
            B::view(&q, 0..q_len),
            B::view(&kv, 0..kv_len),
            d,
            None,
        );
        vec![down(self, &out), down(self, &lse)]
    }

    fn rmsnorm(&self, n: usize, c: usize, frozen: bool) -> Vec<Vec<f32>> {
        let mut rng = Rng::new(9, 7);
        let x = self.upload(random(&mut rng, n * c, 2.0)).unwrap();
        let w = self.upload(random(&mut rng, c, 1.0)).unwrap();
        let dout = self.upload(random(&mut rng, n * c, 1.0)).unwrap();
        let (mut out, mut rstd) = (self.zeros(n * c).unwrap(), self.zeros(n).unwrap());
        self.rmsnorm_forward(
            B::view_mut(&mut out, 0..n * c),
            B::view_mut(&mut rstd, 0..n),
            B::view(&x, 0..n * c),
            B::view(&w, 0..c),
            n,
            c,
            1e-5,
        );
        let mut dinp = self.upload(vec![0.125; n * c]).unwrap();
        let mut dw = self.upload(vec![0.5; c]).unwrap();
        self.rmsnorm_backward(
            B::view_mut(&mut dinp, 0..n * c),
            (!frozen).then(|| B::view_mut(&mut dw, 0..c)),
            B::view(&dout, 0..n * c),
            B::view(&x, 0..n * c),
            B::view(&w, 0..c),
            B::view(&rstd, 0..n),
            n,
            c,
        );
        [&out, &rstd, &dinp, &dw]
            .iter()
            .map(|b| down(self, b))
            .collect()
    }

    fn rope(&self, d: RopeDims) -> Vec<Vec<f32>> {
        let mut rng = Rng::new(10, 8);
        let half = d.head_size / 2;
        let table: Vec<f32> = (0..(d.pos + d.t) * half)
            .flat_map(|k| {
                let angle = (k / half) as f32 * 10_000f32.powf(-((k % half) as f32) / half as f32);
                [angle.cos(), angle.sin()]
            })
            .collect();
        let table = self.upload(table).unwrap();
        let len = d.rows * d.row_stride;
        let mut x = self.upload(random(&mut rng, len, 1.0)).unwrap();
        let tlen = B::len(&table);
        self.rope_forward(B::view_mut(&mut x, 0..len), B::view(&table, 0..tlen), d);
        let turned = down(self, &x);
        self.rope_backward(B::view_mut(&mut x, 0..len), B::view(&table, 0..tlen), d);
        vec![turned, down(self, &x)]
    }

    fn swiglu(&self, n: usize, i: usize) -> Vec<Vec<f32>> {
        let mut rng = Rng::new(11, 9);
        let fc = self.upload(random(&mut rng, n * 2 * i, 4.0)).unwrap();
        let dout = self.upload(random(&mut rng, n * i, 1.0)).unwrap();
        let mut out = self.upload(vec![3.0; n * i]).unwrap();
        self.swiglu_forward(
            B::view_mut(&mut out, 0..n * i),
            B::view(&fc, 0..n * 2 * i),
            n,
            i,
        );
        let mut dfc = self.upload(vec![3.0; n * 2 * i]).unwrap();
        self.swiglu_backward(
            B::view_mut(&mut dfc, 0..n * 2 * i),
            B::view(&dout, 0..n * i),
            B::view(&fc, 0..n * 2 * i),
            n,
            i,
        );
        vec![down(self, &out), down(self, &dfc)]
    }

    fn copy_columns(&self, rows: usize, cols: usize, stride: usize, first: usize) -> Vec<Vec<f32>> {
        let mut rng = Rng::new(12, 10);
        let src = self.upload(random(&mut rng, rows * stride, 1.0)).unwrap();
        // One row more than copied: the last must stay as it was.
        let mut dst = self.upload(vec![5.0; (rows + 1) * cols]).unwrap();
        self.copy_columns(
            B::view_mut(&mut dst, 0..(rows + 1) * cols),
            B::view(&src, 0..rows * stride),
            (rows, cols),
            (stride, first),
        );
        vec![down(self, &dst)]
    }
}

fn down<B: Backend>(be: &B, buf: &B::Buf) -> Vec<f32> {
    let n = B::len(buf);
    let mut host = vec![0.0; n];
    be.download(B::view(buf, 0..n), &mut host);
    host
}

#[test]
fn fill_scale_add_copy_residual_and_dropout() {
    let mut rng = Rng::new(1, 1);
    let (x, y) = (random(&mut rng, 10_007, 1.0), random(&mut rng, 10_007, 1.0));
    on_both("elementwise", |be| be.elementwise(&x, &y));
}

#[test]
fn embedding_forward_and_backward() {
    let e = Emb {
        n: 2 * 7,
        t: 7,
        c: 37,
        v: 11,
        pos: 0,
        with_wpe: true,
    };
    on_both("embedding", |be| be.embedding(e));
    on_both("embedding at a cache position", |be| {
        be.embedding(Emb {
            n: 3,
            t: 3,
            pos: 5,
            ..e
        })
    });
    on_both("bigram table", |be| {
        be.embedding(Emb {
            with_wpe: false,
            ..e
        })
    });
}

#[test]
fn layernorm_forward_backward_and_bias_gradient() {
    on_both("layernorm", |be| be.layernorm(37, 70, true, false));
    on_both("layernorm without bias", |be| {
        be.layernorm(9, 768, false, false)
    });
    on_both("frozen layernorm", |be| be.layernorm(5, 33, true, true));
}

#[test]
fn matmul_layouts_and_epilogues() {
    let base = Mm {
        m: 13,
        k: 29,
        n: 17,
        lhs_t: false,
        rhs_t: false,
        epilogue: 0,
        offset: 0,
    };
    for (lhs_t, rhs_t) in [(false, false), (true, false), (false, true), (true, true)] {
        for epilogue in 0..=5 {
            let c = Mm {
                lhs_t,
                rhs_t,
                epilogue,
                ..base
            };
            on_both(
                &format!("matmul lhs_t {lhs_t} rhs_t {rhs_t} epilogue {epilogue}"),
                |be| be.matmul(c),
            );
        }
    }
    on_both("matmul, GPT-2 MLP-sized", |be| {
        be.matmul(Mm {
            m: 64,
            k: 768,
            n: 3072,
            epilogue: 2,
            ..base
        })
    });
    for (offset, epilogue) in [(1, 1), (3, 2), (2, 5)] {
        on_both(
            &format!("matmul, operands {offset} floats into their buffers"),
            |be| {
                be.matmul(Mm {
                    m: 64,
                    k: 128,
                    n: 96,
                    rhs_t: true,
                    epilogue,
                    offset,
                    ..base
                })
            },
        );
    }
    on_both("matmul, one row", |be| {
        be.matmul(Mm {
            m: 1,
            k: 64,
            n: 65,
            epilogue: 1,
            ..base
        })
    });
}

#[test]
fn attention_forward_and_backward() {
    let small = AttentionDims::fused(2, 9, 0, 24, 3, 3);
    on_both("attention hs 8", |be| be.attention(small, None));
    let drop = Dropout {
        p: 0.2,
        seed: 11,
        stream: 3,
    };
    on_both("attention hs 8 with dropout", |be| {
        be.attention(small, Some(drop))
    });
    let gpt2 = AttentionDims::fused(2, 70, 0, 128, 2, 2);
    on_both("attention hs 64", |be| be.attention(gpt2, None));
    on_both("attention hs 64 with dropout", |be| {
        be.attention(gpt2, Some(drop))
    });
}

#[test]
fn attention_decoding_from_a_cache() {
    for t in [1, 3] {
        let d = AttentionDims::fused(1, t, 6, 24, 3, 3);
        on_both(&format!("attention decoding {t} from position 6"), |be| {
            be.attention(d, None)
        });
    }
}

#[test]
fn fused_softmax_cross_entropy() {
    for v in [11, 300, 50_257] {
        on_both(&format!("cross-entropy v {v} with gradient"), |be| {
            be.cross_entropy(12, v, true)
        });
        on_both(&format!("cross-entropy v {v} loss only"), |be| {
            be.cross_entropy(12, v, false)
        });
    }
}

#[test]
fn adamw_with_clipping_and_a_nan_gradient() {
    on_both("adamw", |be| be.adamw(100_003, false));
    on_both("adamw with a NaN gradient", |be| be.adamw(1000, true));
}

#[test]
fn rmsnorm_forward_and_backward() {
    on_both("rmsnorm", |be| be.rmsnorm(37, 70, false));
    on_both("rmsnorm, SmolLM-wide", |be| be.rmsnorm(9, 576, false));
    on_both("frozen rmsnorm", |be| be.rmsnorm(5, 33, true));
}

#[test]
fn rope_forward_and_backward_in_place() {
    // Llama-char's qkv rows: 4 query + 2 key heads of 32, values after them.
    let train = RopeDims {
        rows: 2 * 9,
        t: 9,
        pos: 0,
        heads: 6,
        head_size: 32,
        row_stride: 256,
    };
    on_both("rope, two sequences", |be| be.rope(train));
    on_both("rope, one row at position 40", |be| {
        be.rope(RopeDims {
            rows: 1,
            t: 1,
            pos: 40,
            ..train
        })
    });
}

#[test]
fn swiglu_forward_and_backward() {
    on_both("swiglu", |be| be.swiglu(13, 352));
    on_both("swiglu, odd width", |be| be.swiglu(3, 37));
}

#[test]
fn kv_cache_column_copy() {
    // Llama-char: 4 query heads of 32 skipped, 2 key + 2 value heads copied.
    on_both("copy_columns", |be| be.copy_columns(3, 128, 256, 128));
    on_both("copy_columns, one row", |be| be.copy_columns(1, 7, 20, 5));
}

#[test]
fn grouped_query_attention_forward_and_backward() {
    let drop = Dropout {
        p: 0.2,
        seed: 11,
        stream: 3,
    };
    for (nh, nkv) in [(4, 2), (6, 1), (9, 3)] {
        let d = AttentionDims::fused(2, 11, 0, nh * 16, nh, nkv);
        on_both(&format!("attention {nh} heads over {nkv}"), |be| {
            be.attention(d, None)
        });
        on_both(&format!("attention {nh} heads over {nkv}, dropout"), |be| {
            be.attention(d, Some(drop))
        });
    }
}

#[test]
fn grouped_query_attention_decoding_from_a_separate_kv_cache() {
    // A Llama's cache holds only the key/value heads: rows of 2 KVC from column 0.
    for t in [1, 2] {
        let fused = AttentionDims::fused(1, t, 6, 64, 4, 2);
        let d = AttentionDims {
            kv_stride: 2 * fused.kv_width(),
            k_offset: 0,
            ..fused
        };
        on_both(&format!("attention from a KV cache, {t} new"), |be| {
            be.kv_cache_attention(d)
        });
    }
}

#[test]
fn gpt2_sizes_attention_at_t_1024() {
    let d = AttentionDims::fused(1, 1024, 0, 768, 12, 12);
    on_both_within("attention, GPT-2 at T 1024", LONG_SUMS, |be| {
        be.attention(d, None)
    });
}

#[test]
fn gpt2_sizes_layernorm_over_8192_rows() {
    on_both_within("layernorm, 8192 x 768", LONG_SUMS, |be| {
        be.layernorm(8192, 768, true, false)
    });
}

#[test]
fn gpt2_sizes_cross_entropy_8192_by_50257() {
    on_both_within("cross-entropy, 8192 x 50257", LONG_SUMS, |be| {
        be.cross_entropy(8192, 50_257, true)
    });
}

#[test]
fn tf32_products_agree_to_tf32_rounding() {
    let Some(gpu) = gpu::cuda_with(MatmulPrecision::Tf32) else {
        return;
    };
    let (m, k, n) = (64, 768, 256);
    let mut rng = Rng::new(13, 11);
    let (lhs, rhs) = (random(&mut rng, m * k, 1.0), random(&mut rng, k * n, 1.0));
    let product = |be: &dyn Runner2| be.product(&lhs, &rhs, (m, k, n));
    let (cpu, tf32) = (product(&Cpu::new()), product(&gpu));
    // Each product sums 768 terms of size ~1/3; TF32 rounds each input to
    // 2^-11 relative: the sum's error is about sqrt(768) * 2^-11 / 3 ~ 5e-3.
    assert_close(
        "TF32 matmul 64 x 768 x 256",
        &tf32,
        &cpu,
        Tol {
            atol: 2e-2,
            rtol: 1e-2,
        },
    );
    let exact = tf32.iter().zip(&cpu).filter(|(g, c)| g == c).count();
    assert!(
        exact < tf32.len() / 2,
        "TF32 products equal float32's in {exact} of {} values: are tensor cores in use?",
        tf32.len()
    );
}

/// A plain product `(m, k) @ (k, n)` on a backend, for the TF32 test.
trait Runner2 {
    fn product(&self, lhs: &[f32], rhs: &[f32], mkn: (usize, usize, usize)) -> Vec<f32>;
}

impl<B: Backend> Runner2 for B {
    fn product(&self, lhs: &[f32], rhs: &[f32], (m, k, n): (usize, usize, usize)) -> Vec<f32> {
        let (l, r) = (
            self.upload(lhs.to_vec()).unwrap(),
            self.upload(rhs.to_vec()).unwrap(),
        );
        let mut dst = self.zeros(m * n).unwrap();
        self.matmul(
            B::view_mut(&mut dst, 0..m * n),
            Mat::new(B::view(&l, 0..m * k), m, k),
            Mat::new(B::view(&r, 0..k * n), k, n),
            Accumulate::Overwrite,
            Epilogue::None,
        );
        down(self, &dst)
    }
}
