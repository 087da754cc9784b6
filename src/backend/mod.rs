//! Compute backends. The CPU backend runs matrix products on the `gemm` crate
//! and every other kernel on `rayon`.

pub mod cpu;
