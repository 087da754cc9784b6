//! `--device cuda` and `--device auto` where the CUDA libraries are missing
//! or broken: a clear error naming the library and the variable that points
//! to it (or, for `auto`, the CPU and the reason), never a panic. These run
//! on any machine: the variables below make the driver missing or unloadable
//! even where one is installed.

use lmforge::backend::cuda::probe::{DRIVER, SearchPlaces};
use std::path::Path;
use std::process::{Command, Output};

/// Environment variables that could point the probe at real libraries.
const HINTS: [&str; 5] = [
    "LMFORGE_LIBCUDA",
    "LMFORGE_LIBNVRTC",
    "LMFORGE_LIBCUBLASLT",
    "CUDA_HOME",
    "CUDA_PATH",
];

fn lmforge(env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lmforge"));
    for var in HINTS {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args).output().expect("lmforge runs")
}

/// A tiny, quick `bench train` on `device`.
fn bench_args(device: &str) -> Vec<&str> {
    vec![
        "bench",
        "train",
        "--device",
        device,
        "--steps",
        "1",
        "--warmup-steps",
        "0",
        "--n-layer",
        "1",
        "--n-embd",
        "16",
        "--n-head",
        "2",
        "--block",
        "8",
        "--batch",
        "1",
        "--threads",
        "1",
    ]
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_clean_failure(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "a plain error exit: {err}");
    assert!(!err.contains("panicked"), "no panic: {err}");
    for needle in needles {
        assert!(err.contains(needle), "{needle:?} missing from: {err}");
    }
}

#[test]
fn a_driver_path_that_does_not_exist_is_named_with_its_variable() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = dir.path().join("nowhere/libcuda.so.1");
    let out = lmforge(&[("LMFORGE_LIBCUDA", &nowhere)], &bench_args("cuda"));
    assert_clean_failure(
        &out,
        &[
            "--device cuda",
            "the NVIDIA driver library",
            "LMFORGE_LIBCUDA=",
            "nowhere",
        ],
    );
}

#[test]
fn a_file_that_is_not_a_library_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("libcuda.so.1");
    std::fs::write(&fake, b"\x7fELF but not really").unwrap();
    let out = lmforge(&[("LMFORGE_LIBCUDA", &fake)], &bench_args("cuda"));
    assert_clean_failure(
        &out,
        &["could not be loaded", "LMFORGE_LIBCUDA", "libcuda.so.1"],
    );
}

#[test]
fn auto_falls_back_to_the_cpu_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = dir.path().join("nowhere");
    let out = lmforge(&[("LMFORGE_LIBCUDA", &nowhere)], &bench_args("auto"));
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("--device auto: using the CPU, because --device cuda: the NVIDIA driver"),
        "{err}"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("lmforge tokens/s:"),
        "it trained on the CPU: {text}"
    );
}

#[test]
fn without_a_driver_installed_the_error_lists_where_it_looked() {
    if SearchPlaces::from_environment().locate(DRIVER).is_ok() {
        eprintln!("SKIPPED: this machine has an NVIDIA driver, so it cannot be missing here");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("corpus.txt");
    std::fs::write(
        &data,
        "to be or not to be, that is the question. ".repeat(200),
    )
    .unwrap();
    let out_dir = dir.path().join("run");
    let out = lmforge(
        &[],
        &[
            "train",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
            "--device",
            "cuda",
        ],
    );
    assert_clean_failure(
        &out,
        &[
            "libcuda.so.1",
            "not found",
            "ldconfig -p",
            "LMFORGE_LIBCUDA=/path/to/libcuda.so.1",
            "580",
        ],
    );
    assert!(
        !out_dir.exists(),
        "nothing was written before the device failed"
    );
}
