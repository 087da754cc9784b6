//! Initial weights, as GPT-2 / nanoGPT: every matrix ~ N(0, 0.02), the
//! residual projections (`attn.c_proj`, `mlp.c_proj`; a Llama's `o_proj`,
//! `down_proj`) ~ N(0, 0.02 / sqrt(2 n_layer)) so the residual stream's
//! variance does not grow with depth, biases 0, norm gains 1. The bigram
//! table ~ N(0, 1), like `nn.Embedding`.

use super::config::Arch;
use super::gpt::Model;
use crate::rng::Rng;

/// A standard normal sample (Box-Muller).
fn normal(rng: &mut Rng) -> f32 {
    let u1 = (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
    let u2 = (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
    ((-2.0 * (1.0 - u1).ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

impl Model {
    /// Fresh parameters for this model, the same for the same seed.
    pub fn init_params(&self, seed: u64) -> Vec<f32> {
        let mut params = vec![0.0f32; self.layout.total];
        crate::huge_pages::advise(&params);
        let residual_std = 0.02 / (2.0 * self.config.n_layer.max(1) as f32).sqrt();
        for (i, spec) in self.layout.tensors.iter().enumerate() {
            let mut rng = Rng::new(seed, 1000 + i as u64);
            let values = &mut params[spec.range.clone()];
            let name = spec.name.as_str();
            if self.config.arch == Arch::Bigram {
                values.iter_mut().for_each(|v| *v = normal(&mut rng));
            } else if name.contains("ln_") || name.contains("norm") {
                values.fill(if name.ends_with(".weight") { 1.0 } else { 0.0 });
            } else if spec.shape.len() == 1 {
                values.fill(0.0);
            } else {
                let residual = ["c_proj.weight", "o_proj.weight", "down_proj.weight"];
                let std = if residual.iter().any(|r| name.ends_with(r)) {
                    residual_std
                } else {
                    0.02
                };
                values.iter_mut().for_each(|v| *v = std * normal(&mut rng));
            }
        }
        params
    }
}
