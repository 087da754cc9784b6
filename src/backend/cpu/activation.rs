//! The feed-forward non-linearities, applied elementwise.
//!
//! ```text
//! GELU (tanh approximation, GPT-2's gelu_new):
//!   u = sqrt(2/pi) * (x + 0.044715 x^3)
//!   gelu(x)  = 0.5 x (1 + tanh u)  =  x * s,   s = sigmoid(2u) = 1 / (1 + exp(-2u))
//!   gelu'(x) = s + x * 2 s (1 - s) * sqrt(2/pi) (1 + 3 * 0.044715 x^2)
//! ReLU:
//!   relu(x) = max(x, 0)        relu'(x) = 1 if x > 0 else 0
//! SiLU (Llama's hidden_act "silu", also called swish):
//!   silu(x) = x * sigmoid(x)   silu'(x) = sigmoid(x) * (1 + x * (1 - sigmoid(x)))
//! ```

use super::math::exp;
use super::simd::vectorised;
use crate::backend::Activation;
use rayon::prelude::*;

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
const GELU_CUBIC: f32 = 0.044715;
const CHUNK: usize = 4096;

/// `sigmoid(2u)`, which equals `(1 + tanh u) / 2`: one `exp` instead of libm's
/// much slower `tanh`, and no cancellation near `u = 0`.
#[inline(always)]
fn gelu_gate(x: f32) -> f32 {
    let u = SQRT_2_OVER_PI * (x + GELU_CUBIC * x * x * x);
    1.0 / (1.0 + exp(-2.0 * u))
}

#[inline(always)]
fn gelu(x: f32) -> f32 {
    x * gelu_gate(x)
}

#[inline(always)]
fn gelu_grad(x: f32) -> f32 {
    let s = gelu_gate(x);
    s + x * 2.0 * s * (1.0 - s) * SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_CUBIC * x * x)
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

#[inline(always)]
pub(super) fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}

#[inline(always)]
pub(super) fn silu_grad(x: f32) -> f32 {
    let s = sigmoid(x);
    s * (1.0 + x * (1.0 - s))
}

/// `out = act(inp)`, elementwise.
pub fn forward(out: &mut [f32], inp: &[f32], act: Activation) {
    out.par_chunks_mut(CHUNK)
        .zip(inp.par_chunks(CHUNK))
        .for_each(|(o, x)| forward_serial(o, x, act));
}

/// [`forward`] on the calling thread.
pub fn forward_serial(out: &mut [f32], inp: &[f32], act: Activation) {
    vectorised!({
        match act {
            Activation::Gelu => out.iter_mut().zip(inp).for_each(|(o, &x)| *o = gelu(x)),
            Activation::Relu => out.iter_mut().zip(inp).for_each(|(o, &x)| *o = x.max(0.0)),
            Activation::Silu => out.iter_mut().zip(inp).for_each(|(o, &x)| *o = silu(x)),
        }
    })
}

/// `d = d * act'(inp)`, in place, on the calling thread: the gradient buffer
/// arrives holding `dout` and leaves holding `dinp`.
pub fn backward_inplace(d: &mut [f32], inp: &[f32], act: Activation) {
    vectorised!({
        match act {
            Activation::Gelu => d.iter_mut().zip(inp).for_each(|(d, &x)| *d *= gelu_grad(x)),
            Activation::Relu => d.iter_mut().zip(inp).for_each(|(d, &x)| {
                if x <= 0.0 {
                    *d = 0.0
                }
            }),
            Activation::Silu => d.iter_mut().zip(inp).for_each(|(d, &x)| *d *= silu_grad(x)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sigmoid form agrees with the textbook tanh form.
    #[test]
    fn gelu_matches_the_tanh_formula() {
        for i in -400..=400 {
            let x = i as f64 * 0.025;
            let u = (2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
            let reference = 0.5 * x * (1.0 + u.tanh());
            let grad = 0.5 * (1.0 + u.tanh())
                + 0.5
                    * x
                    * (1.0 - u.tanh().powi(2))
                    * (2.0 / std::f64::consts::PI).sqrt()
                    * (1.0 + 3.0 * 0.044715 * x * x);
            assert!(
                (gelu(x as f32) as f64 - reference).abs() < 2e-6,
                "gelu({x})"
            );
            assert!(
                (gelu_grad(x as f32) as f64 - grad).abs() < 2e-6,
                "gelu'({x})"
            );
        }
    }
}
