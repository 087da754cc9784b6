//! Elementwise math written so the compiler can vectorise it.
//!
//! libm's `expf` is a scalar call; the kernels call `exp` on millions of
//! values per step (softmax, GELU). [`exp`] is branch-free, so a loop over a
//! slice becomes SIMD code:
//!
//! ```text
//! e^x = 2^n * e^r,   n = round(x / ln 2),   r = x - n ln 2  in [-ln2/2, ln2/2]
//! e^r ~ 1 + r + r^2 (1/2 + r/6 + r^2/24 + ...)      (Cephes' degree-7 minimax)
//! 2^n: written straight into the float's exponent bits
//! ```
//! Relative error below 2e-7 (about 1 ulp). Inputs below -87.3 give ~1e-38
//! instead of a subnormal or 0; nothing here depends on exact zeros.
//!
//! [`dot`] keeps eight partial sums, so the multiply-adds run in parallel
//! lanes instead of one long dependency chain.

const LOG2_E: f32 = std::f32::consts::LOG2_E;
// ln 2 split in two so that n * LN2_HI is exact (Cody-Waite reduction).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// `e^x` for `x` in `[-87.3, 88.3]` (clamped outside, so never inf or NaN for finite input).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.3, 88.3);
    let n = mul_add(x, LOG2_E, 0.5).floor();
    let r = mul_add(n, -LN2_LO, mul_add(n, -LN2_HI, x));
    let p = 1.987_569_1e-4;
    let p = mul_add(p, r, 1.398_199_9e-3);
    let p = mul_add(p, r, 8.333_452e-3);
    let p = mul_add(p, r, 4.166_579_6e-2);
    let p = mul_add(p, r, 1.666_666_5e-1);
    let p = mul_add(p, r, 0.5);
    let er = mul_add(p * r, r, r) + 1.0;
    er * pow2(n)
}

/// `a * b + c`: one fused instruction where the build's target has FMA (a
/// `target-cpu=native` build on a recent CPU), plain arithmetic otherwise, at
/// every run-time level alike (`f32::mul_add` without FMA hardware is a slow
/// library call). So element-wise kernels give the same numbers at every
/// level of one build (see `simd.rs`).
#[inline(always)]
pub fn mul_add(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(target_feature = "fma")]
    {
        a.mul_add(b, c)
    }
    #[cfg(not(target_feature = "fma"))]
    {
        a * b + c
    }
}

/// `2^n` for a whole number `n` in `[-126, 127]`, built in the exponent bits.
/// Adding `1.5 * 2^23` leaves `n` in the low mantissa bits of `n + 1.5 * 2^23`,
/// so no float-to-int conversion is needed: Rust's saturating `as i32` would
/// keep the loops that call [`exp`] from vectorising.
#[inline(always)]
fn pow2(n: f32) -> f32 {
    const SHIFTER: f32 = 12_582_912.0; // 1.5 * 2^23
    f32::from_bits((n + SHIFTER).to_bits().wrapping_add(127) << 23)
}

/// `sum_i a[i] * b[i]` over the shorter of the two.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut lanes = [0.0f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let (a_tail, b_tail) = (a_chunks.remainder(), b_chunks.remainder());
    for (x, y) in a_chunks.zip(b_chunks) {
        for k in 0..8 {
            lanes[k] += x[k] * y[k];
        }
    }
    let mut sum = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    for (x, y) in a_tail.iter().zip(b_tail) {
        sum += x * y;
    }
    sum
}

/// `sum_i f(x[i])`, in eight interleaved partial sums like [`dot`].
#[inline(always)]
pub fn sum_map(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    sum_map3(x, x, x, |v, _, _| f(v))
}

/// `sum_i f(a[i], b[i], c[i])` over the shortest of the three, in eight
/// interleaved partial sums (a fixed order, so results are deterministic).
#[inline(always)]
pub fn sum_map3(a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> f32) -> f32 {
    let n = a.len().min(b.len()).min(c.len());
    let (a, b, c) = (&a[..n], &b[..n], &c[..n]);
    let mut lanes = [0.0f32; 8];
    let (a8, b8, c8) = (a.chunks_exact(8), b.chunks_exact(8), c.chunks_exact(8));
    let tail = n - a8.remainder().len();
    for ((x, y), z) in a8.zip(b8).zip(c8) {
        for k in 0..8 {
            lanes[k] += f(x[k], y[k], z[k]);
        }
    }
    let mut sum = ((lanes[0] + lanes[4]) + (lanes[1] + lanes[5]))
        + ((lanes[2] + lanes[6]) + (lanes[3] + lanes[7]));
    for i in tail..n {
        sum += f(a[i], b[i], c[i]);
    }
    sum
}

/// The largest element (`-inf` for an empty slice), in eight lanes like [`dot`].
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            lanes[k] = if c[k] > lanes[k] { c[k] } else { lanes[k] };
        }
    }
    tail.iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}

/// `y += alpha * x`.
#[inline(always)]
pub fn axpy(y: &mut [f32], alpha: f32, x: &[f32]) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = mul_add(alpha, x, *y);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_to_about_one_ulp() {
        let mut worst = 0.0f64;
        for i in -870_000..=880_000 {
            let x = i as f32 * 1e-4;
            let rel = ((exp(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 2e-7, "worst relative error {worst}");
        assert!(exp(f32::NEG_INFINITY) < 1e-37 && exp(-1000.0) >= 0.0);
        assert!(exp(100.0).is_finite());
    }

    #[test]
    fn lane_sums_match_naive() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let naive: f64 = a.iter().map(|&x| (x as f64 - 0.5).powi(2)).sum();
        assert!((sum_map(&a, |x| (x - 0.5) * (x - 0.5)) as f64 - naive).abs() < 1e-5);
        let naive: f64 = (0..37)
            .map(|i| a[i] as f64 * b[i] as f64 * a[i] as f64)
            .sum();
        assert!((sum_map3(&a, &b, &a, |x, y, z| x * y * z) as f64 - naive).abs() < 1e-5);
    }

    #[test]
    fn max_finds_the_largest_anywhere() {
        for n in [1, 7, 8, 9, 37] {
            for at in 0..n {
                let mut x: Vec<f32> = (0..n).map(|i| -(i as f32)).collect();
                x[at] = 5.0;
                assert_eq!(max(&x), 5.0, "n {n}, at {at}");
            }
        }
        assert_eq!(max(&[]), f32::NEG_INFINITY);
    }

    #[test]
    fn dot_matches_naive() {
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let naive: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        assert!((dot(&a, &b) as f64 - naive).abs() < 1e-5);
    }
}
