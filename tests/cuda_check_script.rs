//! `tools/gpu_check.sh` without a GPU: its arguments, its summary and exit
//! status (through its fake stages: a test that passes, one that fails, a
//! speed number missing), the one tar of logs it leaves in `$OUT`, and the
//! CUDA 13 patch it applies to llm.c (on a file written here in the form
//! of llm.c's `llmc/cuda_utils.cuh`: an include, then a
//! `cudaMemAdvise(..., cudaCpuDeviceId)` call). Needs bash and python3, as
//! the script does; without them the tests say they were skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/gpu_check.sh")
}

fn tools_present() -> bool {
    let found = |tool: &str| Command::new(tool).arg("--version").output().is_ok();
    let present = found("bash") && found("python3");
    if !present {
        eprintln!("SKIPPED: tools/gpu_check.sh needs bash and python3");
    }
    present
}

/// Run the script with `args`, its work and output folders in `dir`.
fn run(dir: &Path, args: &[&str]) -> Output {
    Command::new("bash")
        .arg(script())
        .args(args)
        .env("OUT", dir.join("out"))
        .env("GPU_CHECK_WORK", dir.join("work"))
        .current_dir(dir)
        .output()
        .expect("bash runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The names in the tar of logs the script left.
fn tar_names(dir: &Path) -> String {
    let tar = dir.join("out/gpu-check-logs.tar.gz");
    assert!(tar.is_file(), "no {}", tar.display());
    let list = Command::new("tar").arg("-tzf").arg(&tar).output().unwrap();
    String::from_utf8_lossy(&list.stdout).into_owned()
}

#[test]
fn a_passing_stage_exits_0_with_counts_mfu_and_one_tar() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["--stage", "fake-pass"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("test runs: 1 passed, 0 failed"), "{text}");
    assert!(
        text.contains("test functions: 3 passed, 0 failed"),
        "{text}"
    );
    // 100000 tokens/s x 0.86 GFLOP per token against 989.4 TFLOPS: 8.7%.
    assert!(text.contains("100000 tokens/s    8.7% MFU"), "{text}");
    assert!(text.contains("RESULT: all passed"), "{text}");
    let names = tar_names(dir.path());
    assert!(names.contains("logs/summary.txt"), "{names}");
    assert!(names.contains("logs/test-fake-pass.txt"), "{names}");
    let out_files = std::fs::read_dir(dir.path().join("out")).unwrap().count();
    assert_eq!(out_files, 1, "one tar in $OUT, nothing else");
}

#[test]
fn a_failing_test_exits_1_and_shows_its_log_tail() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["--stage", "fake-fail"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("test runs: 1 passed, 1 failed"), "{text}");
    assert!(
        text.contains("FAIL  fake failing test  (exit 101)"),
        "{text}"
    );
    assert!(
        text.contains("thread main panicked: fake failure"),
        "{text}"
    );
    assert!(text.contains("RESULT: FAILED"), "{text}");
    assert!(tar_names(dir.path()).contains("logs/test-fake-fail.txt"));
}

#[test]
fn a_missing_number_exits_1() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["--stage=fake-missing"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("llm.c (fake)                       MISSING"),
        "{text}"
    );
    assert!(text.contains("RESULT: FAILED"), "{text}");
}

#[test]
fn bad_arguments_exit_2_with_the_usage() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["--stage", "fast"][..],
        &["--stage"],
        &["tests"],
        &["--patch-llmc"],
    ] {
        let out = run(dir.path(), args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("usage: tools/gpu_check.sh"), "{args:?}: {err}");
    }
}

#[test]
fn the_llmc_patch_passes_a_memory_location_on_cuda_13_and_applies_once() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cuda_utils.cuh");
    let original = "#ifndef UTILS\n#include \"cuda_common.h\"\n\nint advise(void** p, size_t n) {\n    \
                    check(cudaMemAdvise(*p, n, cudaMemAdviseSetPreferredLocation, cudaCpuDeviceId), 1);\n}\n";
    std::fs::write(&file, original).unwrap();
    let out = run(dir.path(), &["--patch-llmc", "cuda_utils.cuh"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let patched = std::fs::read_to_string(&file).unwrap();
    assert!(
        patched.contains(
            "cudaMemAdvise(*p, n, cudaMemAdviseSetPreferredLocation, LLMC_CPU_LOCATION), 1)"
        ),
        "{patched}"
    );
    assert!(!patched.contains("cudaCpuDeviceId), 1)"), "{patched}");
    // The definition follows the include, for CUDA 13 and before it.
    let include = patched.find("#include \"cuda_common.h\"").unwrap();
    let define = patched.find("#if CUDART_VERSION >= 13000").unwrap();
    assert!(include < define, "{patched}");
    assert!(
        patched.contains("loc.type = cudaMemLocationTypeHost;"),
        "{patched}"
    );
    assert!(
        patched.contains("#define LLMC_CPU_LOCATION cudaCpuDeviceId"),
        "{patched}"
    );
    // A second time changes nothing.
    let again = run(dir.path(), &["--patch-llmc", "cuda_utils.cuh"]);
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), patched);
    // A file with nothing to patch is an error: llm.c has changed.
    std::fs::write(&file, "#include \"x.h\"\nint y;\n").unwrap();
    let none = run(dir.path(), &["--patch-llmc", "cuda_utils.cuh"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stderr).contains("llm.c has changed"));
}
