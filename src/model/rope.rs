//! The rotary embeddings' angles: one frequency per pair of head channels,
//! stretched as `rope_scaling` says, and the `(cos, sin)` table the kernel
//! reads (`backend/cpu/rope.rs` applies it). As Hugging Face computes them
//! (`modeling_rope_utils.py`), in `f32`:
//!
//! ```text
//! inv_freq[i] = 1 / theta^(2i / hs)                      i < hs/2
//! linear:  inv_freq[i] /= factor
//! llama3:  wavelen = 2 pi / inv_freq[i]; lo = old / low_freq_factor; hi = old / high_freq_factor
//!          wavelen > lo (low frequencies):  inv_freq[i] / factor
//!          wavelen < hi (high frequencies): inv_freq[i]
//!          between: (1 - s) * inv_freq[i] / factor + s * inv_freq[i],
//!                   s = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
//! table[p][i] = (cos, sin)(p * inv_freq[i])              p < block_size
//! ```
//! (`old` is `original_max_position_embeddings`.)

use super::config::{LlamaConfig, RopeScaling};

/// The frequency of each channel pair of a head of `head_size` channels.
pub fn inv_freq(cfg: &LlamaConfig, head_size: usize) -> Vec<f32> {
    (0..head_size / 2)
        .map(|i| {
            let base = 1.0 / cfg.rope_theta.powf((2 * i) as f32 / head_size as f32);
            scaled(base, cfg.rope_scaling)
        })
        .collect()
}

fn scaled(f: f32, scaling: RopeScaling) -> f32 {
    match scaling {
        RopeScaling::None => f,
        RopeScaling::Linear { factor } => f / factor,
        RopeScaling::Llama3 {
            factor,
            low_freq_factor,
            high_freq_factor,
            original_max_position_embeddings,
        } => {
            let old = original_max_position_embeddings as f32;
            let wavelen = 2.0 * std::f32::consts::PI / f;
            if wavelen > old / low_freq_factor {
                f / factor
            } else if wavelen < old / high_freq_factor {
                f
            } else {
                let s = (old / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                (1.0 - s) * f / factor + s * f
            }
        }
    }
}

/// `(cos, sin)` of every position's angle for every pair:
/// `positions * head_size / 2` pairs, position-major.
pub fn table(cfg: &LlamaConfig, head_size: usize, positions: usize) -> Vec<f32> {
    let freqs = inv_freq(cfg, head_size);
    let mut table = Vec::with_capacity(positions * freqs.len() * 2);
    for p in 0..positions {
        for &f in &freqs {
            let angle = p as f32 * f;
            table.extend([angle.cos(), angle.sin()]);
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(rope_scaling: RopeScaling) -> LlamaConfig {
        LlamaConfig {
            n_kv_head: 1,
            intermediate_size: 8,
            rope_theta: 500_000.0,
            rope_scaling,
            rms_norm_eps: 1e-5,
        }
    }

    /// Llama 3's stretch keeps the fastest frequency, divides the slowest by
    /// the factor, and blends those between; linear divides all.
    #[test]
    fn scalings_stretch_the_frequencies_they_should() {
        let plain = inv_freq(&cfg(RopeScaling::None), 128);
        let linear = inv_freq(&cfg(RopeScaling::Linear { factor: 4.0 }), 128);
        let llama3 = inv_freq(
            &cfg(RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192,
            }),
            128,
        );
        assert_eq!(plain[0], 1.0);
        assert!(linear.iter().zip(&plain).all(|(l, p)| *l == p / 4.0));
        assert_eq!(llama3[0], plain[0]);
        assert_eq!(llama3[63], plain[63] / 8.0);
        let blended = (0..64).filter(|&i| llama3[i] != plain[i] && llama3[i] != plain[i] / 8.0);
        assert!(blended.count() > 0, "some frequencies are blended");
    }
}
