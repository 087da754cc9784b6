//! The GPU for the tests that need one: the CUDA backend, or `None` (with
//! a SKIPPED line saying why) on a machine without a GPU. With
//! `LMFORGE_REQUIRE_GPU=1` (as `tools/gpu_check.sh` sets) a backend that
//! does not start fails the test instead, so a broken GPU setup cannot pass
//! as a skipped one.

use lmforge::backend::cuda::Cuda;

pub fn cuda() -> Option<Cuda> {
    match Cuda::new() {
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
