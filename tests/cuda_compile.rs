//! Every CUDA kernel compiles, with no GPU: NVRTC (from NVIDIA's Python
//! wheel) turns the program into PTX for `compute_80` and `compute_90`, and
//! `ptxas` assembles each for `sm_80` (A100) and `sm_90` (H100/H200), so
//! syntax errors, missing intrinsics and kernels over the register or
//! shared-memory limits show up here, not on a GPU machine.
//!
//! The wheels come from `tools/cuda_venv.sh` (which `.ci/run` runs) in
//! `target/cuda-venv`, or the venv `LMFORGE_CUDA_VENV` names. Without them
//! the test says it was skipped.

use lmforge::backend::cuda::compile::{KERNELS, Target, compile};
use lmforge::backend::cuda::probe::{NVRTC, SearchPlaces, open};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The venv's `site-packages`, when it holds the CUDA 13 wheels.
fn wheel_site() -> Option<PathBuf> {
    let venv = std::env::var_os("LMFORGE_CUDA_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/cuda-venv"));
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    lib.flatten()
        .map(|e| e.path().join("site-packages"))
        .find(|site| site.join("nvidia/cu13/bin/ptxas").is_file())
}

#[test]
fn every_kernel_compiles_with_nvrtc_and_assembles_with_ptxas_for_sm80_and_sm90() {
    let Some(site) = wheel_site() else {
        eprintln!(
            "SKIPPED: no CUDA 13 compiler wheels in target/cuda-venv (run tools/cuda_venv.sh, \
             or set LMFORGE_CUDA_VENV)"
        );
        return;
    };
    let places = SearchPlaces {
        site_packages: vec![site.clone()],
        ..Default::default()
    };
    let nvrtc = places.locate(NVRTC).expect("the wheel's NVRTC");
    open(&nvrtc).expect("NVRTC loads");
    let ptxas = site.join("nvidia/cu13/bin/ptxas");
    let dir = tempfile::tempdir().unwrap();
    for arch in [80, 90] {
        let ptx = compile(Target::Ptx(arch)).unwrap_or_else(|e| panic!("{e}"));
        let text = String::from_utf8(ptx.clone()).unwrap();
        for kernel in KERNELS {
            assert!(
                text.contains(&format!(".entry {kernel}(")),
                "{kernel} missing from the PTX for compute_{arch}"
            );
        }
        let ptx_file = dir.path().join(format!("kernels_{arch}.ptx"));
        std::fs::write(&ptx_file, &ptx).unwrap();
        let out = Command::new(&ptxas)
            .arg(format!("-arch=sm_{arch}"))
            .arg("-v")
            .arg("--warning-as-error")
            .arg(&ptx_file)
            .arg("-o")
            .arg(dir.path().join(format!("kernels_{arch}.cubin")))
            .output()
            .expect("ptxas runs");
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "ptxas sm_{arch} failed:\n{log}");
        // Spilled registers would be slow local memory in the hot loops.
        for line in log.lines().filter(|l| l.contains("spill")) {
            assert!(
                line.contains(" 0 bytes spill stores, 0 bytes spill loads"),
                "sm_{arch}: {line}"
            );
        }
        eprintln!("sm_{arch}: all {} kernels assembled\n{log}", KERNELS.len());
    }
}
