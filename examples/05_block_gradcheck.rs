//! Chapter 5: multi-head attention and a whole transformer block, forward
//! and backward, checked against finite differences.
//!
//! Multi-head attention runs `NH` heads of size `hs = C / NH` side by side:
//! head `h` reads channels `h*hs .. (h+1)*hs` of q, k and v, and the heads'
//! outputs sit next to each other in `out (B, T, C)`. A block is
//!
//! ```text
//! x = x + attn(ln_1(x))        attn: qkv = x Wqkv (C, 3C), heads, out = y Wproj (C, C)
//! x = x + mlp(ln_2(x))         mlp:  h = gelu(x Wfc (C, 4C)), out = h Wproj (4C, C)
//! ```
//!
//! Backward is written by hand (no autograd), so we check it the way
//! llm.c and every course do: nudge one number by `±h`, see how the loss
//! moves, and compare `(L(p+h) - L(p-h)) / 2h` with the analytic gradient.
//!
//! Run: `cargo run --release --example 05_block_gradcheck`.

#[path = "common/mod.rs"]
mod common;

use lmforge::backend::cpu::{Cpu, attention};
use lmforge::backend::{AttentionDims, Backend};
use lmforge::model::{Activation, Activations, Arch, Mode, Model, ModelConfig, Norm, Window};
use lmforge::rng::Rng;

fn filled(n: usize, rng: &mut Rng, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.next_f32() * 2.0 - 1.0) * scale)
        .collect()
}

fn attention_out(qkv: &[f32], d: AttentionDims) -> Vec<f32> {
    let (mut out, mut lse) = (vec![0.0; d.b * d.t * d.c], vec![0.0; d.b * d.n_head * d.t]);
    let mut scratch = vec![0.0; attention::scratch_len(d)];
    attention::forward(&mut out, &mut lse, &mut scratch, (qkv, qkv), d, None);
    out
}

/// Two heads at once equal each head alone on its slice of the channels.
fn heads_side_by_side(rng: &mut Rng) -> f32 {
    let (t, c, nh) = (4, 8, 2);
    let hs = c / nh;
    let qkv = filled(t * 3 * c, rng, 1.0);
    let both = attention_out(&qkv, AttentionDims::fused(1, t, 0, c, nh, nh));
    let mut worst = 0.0f32;
    for h in 0..nh {
        // Head h alone: its q, k, v channels as a one-head problem of width hs.
        let mut alone = vec![0.0; t * 3 * hs];
        for pos in 0..t {
            for part in 0..3 {
                let src = &qkv[pos * 3 * c + part * c + h * hs..][..hs];
                alone[pos * 3 * hs + part * hs..][..hs].copy_from_slice(src);
            }
        }
        let out = attention_out(&alone, AttentionDims::fused(1, t, 0, hs, 1, 1));
        for pos in 0..t {
            for i in 0..hs {
                worst = worst.max((out[pos * hs + i] - both[pos * c + h * hs + i]).abs());
            }
        }
    }
    println!(
        "multi-head attention: (T, C) = ({t}, {c}), {nh} heads of {hs}; |2 heads - each alone| = {worst:.1e}"
    );
    worst
}

/// Attention backward against finite differences of `L = sum(out * g)`.
fn attention_backward_check(rng: &mut Rng) -> f32 {
    let d = AttentionDims::fused(1, 5, 0, 8, 2, 2);
    let mut qkv = filled(d.t * 3 * d.c, rng, 1.0);
    let g = filled(d.t * d.c, rng, 1.0);
    let loss = |qkv: &[f32]| -> f64 {
        attention_out(qkv, d)
            .iter()
            .zip(&g)
            .map(|(o, g)| (o * g) as f64)
            .sum()
    };
    let (mut out, mut lse) = (vec![0.0; d.t * d.c], vec![0.0; d.n_head * d.t]);
    let mut scratch = vec![0.0; attention::scratch_len(d)];
    attention::forward(&mut out, &mut lse, &mut scratch, (&qkv, &qkv), d, None);
    let mut dqkv = vec![0.0; qkv.len()];
    attention::backward(&mut dqkv, &mut scratch, &g, &qkv, &lse, d, None);
    let (h, mut worst) = (1e-2f32, 0.0f32);
    for i in 0..qkv.len() {
        let saved = qkv[i];
        qkv[i] = saved + h;
        let plus = loss(&qkv);
        qkv[i] = saved - h;
        let minus = loss(&qkv);
        qkv[i] = saved;
        let numeric = ((plus - minus) / (2.0 * h as f64)) as f32;
        worst = worst.max((numeric - dqkv[i]).abs() / (1.0 + numeric.abs()));
    }
    println!(
        "attention backward: dqkv ({}, {}) vs finite differences: worst error {worst:.1e}",
        d.t,
        3 * d.c
    );
    worst
}

fn block_config() -> ModelConfig {
    ModelConfig {
        arch: Arch::Gpt,
        vocab_size: 11,
        block_size: 6,
        n_layer: 1,
        n_head: 2,
        n_embd: 8,
        dropout: 0.0,
        norm: Norm::Pre,
        activation: Activation::Gelu,
        tie_embeddings: true,
        bias: true,
        qkv_bias: true,
        lm_head_bias: false,
        llama: None,
        lora: None,
    }
}

/// Every parameter of the block (`transformer.h.0.*`) against finite differences.
fn block_backward_check(be: &Cpu, rng: &mut Rng, per_tensor: usize) -> lmforge::Result<f32> {
    let model = Model::new(block_config())?;
    let (b, t) = (2, 6);
    let window = Window::batch(b, t);
    let mut host = filled(model.num_params(), rng, 0.4);
    let tokens: Vec<u32> = (0..b * t).map(|_| rng.below(11) as u32).collect();
    let targets: Vec<u32> = (0..b * t).map(|_| rng.below(11) as u32).collect();
    let mut acts = Activations::training(be, &model.config, b, t)?;
    let mut loss_at = |host: &[f32]| -> lmforge::Result<f64> {
        let params = be.upload(host.to_vec())?;
        model.forward(be, &params, &mut acts, &tokens, window, Mode::Eval);
        Ok(model.loss(be, &mut acts, &targets, window) as f64)
    };
    let mut numeric = Vec::new();
    let h = 1e-2f32;
    for spec in model
        .layout
        .tensors
        .iter()
        .filter(|s| s.name.starts_with("transformer.h.0."))
    {
        for k in 0..per_tensor.min(spec.range.len()) {
            let i = spec.range.start + (k * 7919 + 3) % spec.range.len();
            let saved = host[i];
            host[i] = saved + h;
            let plus = loss_at(&host)?;
            host[i] = saved - h;
            let minus = loss_at(&host)?;
            host[i] = saved;
            numeric.push((
                spec.name.clone(),
                i,
                ((plus - minus) / (2.0 * h as f64)) as f32,
            ));
        }
    }
    let params = be.upload(host)?;
    let mut grads = lmforge::model::Grads::new(be, 0, model.num_params())?;
    model.forward(be, &params, &mut acts, &tokens, window, Mode::Eval);
    let dloss = 1.0 / (b * t) as f32; // gradient of the mean loss
    model.backward(
        be,
        &params,
        &mut grads,
        &mut acts,
        &targets,
        window,
        Mode::Eval,
        dloss,
    );
    // The tolerance of tests/gradcheck.rs: 1e-4 absolute plus 1% of the value.
    let mut worst = 0.0f32;
    let mut last_name = "";
    for (name, i, num) in &numeric {
        worst = worst.max((grads.buf[*i] - num).abs() / (1e-4 + 1e-2 * num.abs()));
        if name != last_name {
            let (a, n) = (grads.buf[*i], num);
            println!("  {name:<34} analytic {a:+.5}  numeric {n:+.5}");
            last_name = name;
        }
    }
    println!(
        "block backward: {} parameters checked; worst |analytic - numeric| / (1e-4 + 1% |numeric|) = {worst:.2} (below 1 passes)",
        numeric.len()
    );
    Ok(worst)
}

/// The worst errors of the three checks.
pub fn run(tiny: bool) -> lmforge::Result<[f32; 3]> {
    let mut rng = Rng::new(5, 0);
    let be = Cpu::new();
    Ok([
        heads_side_by_side(&mut rng),
        attention_backward_check(&mut rng),
        block_backward_check(&be, &mut rng, if tiny { 3 } else { 12 })?,
    ])
}

fn main() -> std::process::ExitCode {
    common::main_with(|args| run(args.tiny).map(|_| ()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn forward_and_backward_agree_with_the_references() {
        let [heads, attention, block] = super::run(true).unwrap();
        assert!(heads < 1e-5, "{heads}");
        // f32 central differences with h = 1e-2: about 1e-3 of rounding and truncation.
        assert!(attention < 2e-3, "{attention}");
        assert!(block < 1.0, "{block}");
    }
}
