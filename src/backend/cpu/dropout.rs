//! Dropout on the CPU: the mask of [`Dropout`] applied in place, in parallel
//! chunks (the mask of element `i` depends only on `i`, so the split does not
//! change it).

use super::simd::vectorised;
use crate::backend::Dropout;
use rayon::prelude::*;

/// `x[i] *= d.factor(i)`. Forward and backward are the same operation (the
/// mask multiplies the value going forward and the gradient going back).
pub fn apply(d: &Dropout, x: &mut [f32]) {
    if d.p == 0.0 {
        return;
    }
    const CHUNK: usize = 4096;
    x.par_chunks_mut(CHUNK).enumerate().for_each(|(k, chunk)| {
        vectorised!({
            for (j, v) in chunk.iter_mut().enumerate() {
                *v *= d.factor(k * CHUNK + j);
            }
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_about_one_minus_p_and_preserves_the_mean() {
        let d = Dropout {
            p: 0.2,
            seed: 1,
            stream: 9,
        };
        let mut x = vec![1.0f32; 100_000];
        apply(&d, &mut x);
        let kept = x.iter().filter(|&&v| v != 0.0).count() as f32 / x.len() as f32;
        let mean = x.iter().sum::<f32>() / x.len() as f32;
        assert!((kept - 0.8).abs() < 0.01, "kept {kept}");
        assert!((mean - 1.0).abs() < 0.02, "mean {mean}");
        let mut y = vec![1.0f32; 100_000];
        apply(&d, &mut y);
        assert_eq!(x, y, "the mask depends only on (seed, stream, index)");
    }
}
