//! The GPU for the tests that need one: the CUDA backend, or `None` (with
//! a SKIPPED line saying why) on a machine without a GPU. With
//! `LMFORGE_REQUIRE_GPU=1` (as `tools/gpu_check.sh` sets) a backend that
//! does not start fails the test instead, so a broken GPU setup cannot pass
//! as a skipped one.
//!
//! The backend multiplies in full float32 here, so products match the CPU's
//! to float32 rounding (TF32, the default, has its own test).

use lmforge::backend::cuda::{Cuda, MatmulPrecision};

#[allow(dead_code)] // not every test binary that includes this module calls it
pub fn cuda() -> Option<Cuda> {
    cuda_with(MatmulPrecision::Fp32)
}

/// The CUDA backend with products in `precision`, or `None` (saying why).
pub fn cuda_with(precision: MatmulPrecision) -> Option<Cuda> {
    match Cuda::with_precision(precision) {
        Ok(gpu) => Some(gpu),
        Err(e) if std::env::var_os("LMFORGE_REQUIRE_GPU").is_some() => {
            panic!("LMFORGE_REQUIRE_GPU is set, but the CUDA backend did not start: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED (needs a GPU): {e}");
            None
        }
    }
}
