//! One SIMD register of floats, for the few kernels that must hold their
//! accumulators in registers (see [`super::few_rows`]).
//!
//! The compiler vectorises plain loops well one at a time, but a block of
//! 16 accumulators written as arrays of floats ends up in memory, stored on
//! every iteration. [`Vector`] wraps the CPU's own vector type where this
//! crate is built for it (AVX-512: 16 lanes; AVX2 with FMA: 8 lanes), so the
//! accumulators are register values from the start; other CPUs get the same
//! operations on a plain array of 8 lanes.
//!
//! | operation | meaning |
//! |---|---|
//! | `Vector::ZERO`, `splat(v)` | all lanes 0, all lanes `v` |
//! | `load(&[f32; LANES])` | the lanes, read from memory |
//! | `a.mul_add(x, y)` | `a + x * y`, lane by lane (one fused instruction) |
//! | `a.sum()` | the lanes added pairwise, in a fixed order |
//! | `prefetch(data, at)` | a hint to start loading `data[at]`'s cache line |
//! | `a.store(&mut [f32; LANES])`, `a.to_array()` | the lanes, written out |

#[cfg(all(target_arch = "x86_64", target_feature = "avx512f"))]
mod imp {
    use std::arch::x86_64::*;

    pub const LANES: usize = 16;

    #[derive(Clone, Copy)]
    pub struct Vector(__m512);

    impl Vector {
        // SAFETY (every `unsafe` below): the crate is compiled with AVX-512F
        // enabled (this module exists only then), and loads and stores go
        // through `&[f32; 16]` / `[f32; 16]`, which hold exactly 16 floats.
        pub const ZERO: Vector =
            Vector(unsafe { std::mem::transmute::<[f32; 16], __m512>([0.0; 16]) });

        #[inline(always)]
        pub fn load(from: &[f32; LANES]) -> Vector {
            Vector(unsafe { _mm512_loadu_ps(from.as_ptr()) })
        }

        #[inline(always)]
        pub fn splat(v: f32) -> Vector {
            Vector(unsafe { _mm512_set1_ps(v) })
        }

        #[inline(always)]
        pub fn mul_add(self, a: Vector, b: Vector) -> Vector {
            Vector(unsafe { _mm512_fmadd_ps(a.0, b.0, self.0) })
        }

        #[inline(always)]
        pub fn store(self, to: &mut [f32; LANES]) {
            unsafe { _mm512_storeu_ps(to.as_mut_ptr(), self.0) }
        }
    }
}

#[cfg(all(
    target_arch = "x86_64",
    target_feature = "avx2",
    target_feature = "fma",
    not(target_feature = "avx512f")
))]
mod imp {
    use std::arch::x86_64::*;

    pub const LANES: usize = 8;

    #[derive(Clone, Copy)]
    pub struct Vector(__m256);

    impl Vector {
        // SAFETY (every `unsafe` below): the crate is compiled with AVX2 and
        // FMA enabled (this module exists only then), and loads and stores go
        // through `&[f32; 8]` / `[f32; 8]`, which hold exactly 8 floats.
        pub const ZERO: Vector =
            Vector(unsafe { std::mem::transmute::<[f32; 8], __m256>([0.0; 8]) });

        #[inline(always)]
        pub fn load(from: &[f32; LANES]) -> Vector {
            Vector(unsafe { _mm256_loadu_ps(from.as_ptr()) })
        }

        #[inline(always)]
        pub fn splat(v: f32) -> Vector {
            Vector(unsafe { _mm256_set1_ps(v) })
        }

        #[inline(always)]
        pub fn mul_add(self, a: Vector, b: Vector) -> Vector {
            Vector(unsafe { _mm256_fmadd_ps(a.0, b.0, self.0) })
        }

        #[inline(always)]
        pub fn store(self, to: &mut [f32; LANES]) {
            unsafe { _mm256_storeu_ps(to.as_mut_ptr(), self.0) }
        }
    }
}

#[cfg(not(all(
    target_arch = "x86_64",
    any(
        target_feature = "avx512f",
        all(target_feature = "avx2", target_feature = "fma")
    )
)))]
mod imp {
    use super::super::math::mul_add;

    pub const LANES: usize = 8;

    #[derive(Clone, Copy)]
    pub struct Vector([f32; LANES]);

    impl Vector {
        pub const ZERO: Vector = Vector([0.0; LANES]);

        #[inline(always)]
        pub fn load(from: &[f32; LANES]) -> Vector {
            Vector(*from)
        }

        #[inline(always)]
        pub fn splat(v: f32) -> Vector {
            Vector([v; LANES])
        }

        #[inline(always)]
        pub fn mul_add(self, a: Vector, b: Vector) -> Vector {
            Vector(std::array::from_fn(|l| mul_add(a.0[l], b.0[l], self.0[l])))
        }

        #[inline(always)]
        pub fn store(self, to: &mut [f32; LANES]) {
            *to = self.0;
        }
    }
}

pub use imp::{LANES, Vector};

/// Ask the CPU to start loading the cache line that holds `data[at]` (a
/// hint: nothing happens past the end of `data`, or on other CPUs). For
/// access patterns the hardware prefetchers do not follow on their own.
#[inline(always)]
pub fn prefetch(data: &[f32], at: usize) {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse"))]
    if at < data.len() {
        // SAFETY: a prefetch never faults and reads nothing into the program;
        // the pointer is inside `data` anyway.
        unsafe {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            _mm_prefetch::<_MM_HINT_T0>(data.as_ptr().add(at).cast());
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse")))]
    let _ = (data, at);
}

impl Vector {
    /// The lanes, written out.
    #[inline(always)]
    pub fn to_array(self) -> [f32; LANES] {
        let mut out = [0.0f32; LANES];
        self.store(&mut out);
        out
    }

    /// The sum of the lanes, halving pairwise (a fixed order on every CPU
    /// with the same `LANES`).
    #[inline(always)]
    pub fn sum(self) -> f32 {
        let mut lanes = self.to_array();
        let mut width = LANES;
        while width > 1 {
            width /= 2;
            for l in 0..width {
                lanes[l] += lanes[l + width];
            }
        }
        lanes[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_act_lane_by_lane() {
        let a: [f32; LANES] = std::array::from_fn(|l| l as f32);
        let b: [f32; LANES] = std::array::from_fn(|l| 2.0 - l as f32);
        let out = Vector::splat(1.0)
            .mul_add(Vector::load(&a), Vector::load(&b))
            .to_array();
        for l in 0..LANES {
            assert_eq!(out[l], 1.0 + a[l] * b[l]);
        }
        assert_eq!(Vector::ZERO.to_array(), [0.0; LANES]);
        let want: f32 = a.iter().sum();
        assert_eq!(Vector::load(&a).sum(), want);
    }
}
