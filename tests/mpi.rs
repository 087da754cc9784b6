//! Data-parallel training over MPI, run for real: `mpirun --oversubscribe
//! -np 2` starts two ranks of the binary on this machine (one thread each).
//!
//! - two ranks with batch B give the bits of one rank with `--grad-accum 2`
//!   (losses, weights, moments), also with ZeRO-1 and over TCP on loopback;
//!   four ranks agree with `--grad-accum 4` to rounding;
//! - a rank killed mid-run takes the other down within a bounded time, the
//!   last checkpoint is whole, and resuming it (on one rank) ends on the
//!   uninterrupted run's bits;
//! - a rank that hangs makes the other stop with a clear error (the
//!   collective timeout) instead of waiting for ever.
//!
//! Built without `--features mpi`, a launch of several ranks is refused
//! with the way to build it; with the feature but no `mpirun` on the PATH,
//! the tests say they were skipped.

#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_lmforge")
}

fn corpus(dir: &Path) -> PathBuf {
    let path = dir.join("corpus.txt");
    let text: String = (0..800)
        .map(|i| format!("line {i}: the quality of mercy is not strained; it droppeth.\n"))
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// A new run's flags: a model of about 100k parameters (seven gradient-norm
/// chunks, so ZeRO-1's shards are uneven), dropout on.
fn new_run(data: &Path, out: &Path, steps: u64) -> Vec<String> {
    let mut args: Vec<String> = ["train", "--data", data.to_str().unwrap()]
        .into_iter()
        .map(String::from)
        .collect();
    args.extend(["--out".into(), out.to_str().unwrap().into()]);
    let flags = "--n-layer 2 --n-head 4 --n-embd 64 --block 32 --batch 4 --dropout 0.1 \
                 --eval-interval 5 --eval-iters 2 --warmup-iters 2 --plot none --threads 1";
    args.extend(flags.split(' ').map(String::from));
    args.extend(["--max-iters".into(), steps.to_string()]);
    args
}

#[cfg(feature = "mpi")]
mod with_mpi {
    use super::*;
    use std::collections::BTreeMap;
    use std::process::{Output, Stdio};
    use std::time::{Duration, Instant};

    /// `mpirun` with `np` ranks, or `None` (the test prints that it was skipped).
    fn mpirun(np: usize, mca_tcp: bool) -> Option<Command> {
        let found = Command::new("mpirun")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            eprintln!("skipped: mpirun is not on the PATH (install openmpi-bin)");
            return None;
        }
        let mut cmd = Command::new("mpirun");
        cmd.env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .args(["--oversubscribe", "-np", &np.to_string()]);
        if mca_tcp {
            // Byte transfer over TCP (loopback here) and to self only: no shared memory.
            cmd.args([
                "--mca",
                "btl",
                "tcp,self",
                "--mca",
                "btl_tcp_if_include",
                "lo",
            ]);
        }
        cmd.arg(bin());
        Some(cmd)
    }

    fn run(mut cmd: Command, args: &[String]) -> Output {
        let out = cmd.args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn one_rank(args: &[String]) -> Output {
        run(Command::new(bin()), args)
    }

    /// Every tensor of a safetensors file, as bytes.
    fn tensors(path: &Path) -> BTreeMap<String, Vec<u8>> {
        let bytes = std::fs::read(path).unwrap();
        let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        file.tensors()
            .into_iter()
            .map(|(name, view)| (name, view.data().to_vec()))
            .collect()
    }

    /// The training losses logged, as bits, by step (evaluations left out:
    /// with two ranks they average twice the batches).
    fn step_losses(out: &Path) -> Vec<(u64, u32)> {
        std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .filter(|v| v.get("eval").is_none())
            .map(|v| {
                let loss = v["train_loss"].as_f64().unwrap() as f32;
                (v["step"].as_u64().unwrap(), loss.to_bits())
            })
            .collect()
    }

    /// Same losses at every step, same weights and moments, bit for bit.
    fn assert_same_run(a: &Path, b: &Path) {
        let (la, lb) = (step_losses(a), step_losses(b));
        assert!(!la.is_empty());
        assert_eq!(la, lb, "losses of {} and {}", a.display(), b.display());
        for file in ["model.safetensors", "train_state.safetensors"] {
            let (ta, tb) = (tensors(&a.join(file)), tensors(&b.join(file)));
            assert_eq!(ta.keys().collect::<Vec<_>>(), tb.keys().collect::<Vec<_>>());
            for (name, bytes) in &ta {
                assert!(bytes == &tb[name], "{file}: tensor {name} differs");
            }
        }
    }

    fn with(mut args: Vec<String>, extra: &[&str]) -> Vec<String> {
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    #[test]
    fn two_ranks_give_the_bits_of_one_rank_accumulating_two() {
        let Some(cmd) = mpirun(2, false) else { return };
        let dir = tempfile::tempdir().unwrap();
        let data = corpus(dir.path());
        let (one, two) = (dir.path().join("one"), dir.path().join("two"));
        one_rank(&with(new_run(&data, &one, 8), &["--grad-accum", "2"]));
        let out = run(cmd, &new_run(&data, &two, 8));
        assert_same_run(&one, &two);
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(
            log.contains("2 ranks x batch 4 x grad-accum 1 = 8 sequences per step"),
            "{log}"
        );
        // Not a run that ignored the second rank: one rank alone differs.
        let alone = dir.path().join("alone");
        one_rank(&new_run(&data, &alone, 8));
        assert_ne!(step_losses(&alone), step_losses(&one));
    }

    /// The largest difference between two runs' losses and weights, relative
    /// (weights: to each tensor's largest magnitude).
    fn worst_relative_difference(a: &Path, b: &Path) -> (f64, f64) {
        let (la, lb) = (step_losses(a), step_losses(b));
        assert_eq!(la.len(), lb.len());
        let loss = la
            .iter()
            .zip(&lb)
            .map(|(x, y)| {
                let (x, y) = (f32::from_bits(x.1) as f64, f32::from_bits(y.1) as f64);
                (x - y).abs() / x.abs()
            })
            .fold(0.0, f64::max);
        let floats = |bytes: &[u8]| -> Vec<f32> {
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        };
        let (ta, tb) = (
            tensors(&a.join("model.safetensors")),
            tensors(&b.join("model.safetensors")),
        );
        let weights = ta
            .iter()
            .map(|(name, bytes)| {
                let (x, y) = (floats(bytes), floats(&tb[name]));
                let scale = x.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
                let worst = x
                    .iter()
                    .zip(&y)
                    .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
                (worst / scale) as f64
            })
            .fold(0.0, f64::max);
        (loss, weights)
    }

    /// Four ranks add four gradients in another order than one rank
    /// accumulating four: the same run to rounding. Tolerance 1e-5 relative
    /// (measured: 1.2e-7 for the losses, 2.3e-7 for the weights over 50 steps).
    #[test]
    fn four_ranks_agree_with_one_rank_accumulating_four_to_rounding() {
        let Some(cmd) = mpirun(4, false) else { return };
        let dir = tempfile::tempdir().unwrap();
        let data = corpus(dir.path());
        let (one, four) = (dir.path().join("one"), dir.path().join("four"));
        one_rank(&with(new_run(&data, &one, 12), &["--grad-accum", "4"]));
        run(cmd, &new_run(&data, &four, 12));
        let (loss, weights) = worst_relative_difference(&one, &four);
        assert!(
            loss < 1e-5 && weights < 1e-5,
            "losses {loss:e}, weights {weights:e}"
        );
        let alone = dir.path().join("alone");
        one_rank(&new_run(&data, &alone, 12));
        let (loss, _) = worst_relative_difference(&one, &alone);
        assert!(
            loss > 1e-3,
            "one rank with a quarter of the batch differs ({loss:e})"
        );
    }

    #[test]
    fn zero_1_gives_the_bits_of_plain_data_parallel() {
        let Some(cmd) = mpirun(2, false) else { return };
        let dir = tempfile::tempdir().unwrap();
        let data = corpus(dir.path());
        let (one, zero) = (dir.path().join("one"), dir.path().join("zero"));
        one_rank(&with(new_run(&data, &one, 8), &["--grad-accum", "2"]));
        let out = run(cmd, &with(new_run(&data, &zero, 8), &["--zero", "1"]));
        assert!(String::from_utf8_lossy(&out.stderr).contains("sharded (ZeRO-1)"));
        // The gathered checkpoint is the whole state: the same files as one rank's.
        assert_same_run(&one, &zero);
    }

    /// With bf16 products each rank rewrites its bf16 copy of the weights
    /// from the gathered f32 masters after every update: ZeRO-1 on two
    /// ranks still gives one rank's bits, and bf16 is not f32's run.
    #[test]
    fn zero_1_in_bf16_gives_the_bits_of_one_rank() {
        let Some(cmd) = mpirun(2, false) else { return };
        let dir = tempfile::tempdir().unwrap();
        let data = corpus(dir.path());
        let (one, zero) = (dir.path().join("one"), dir.path().join("zero"));
        let bf16 = ["--dtype", "bf16"];
        let one_args = with(new_run(&data, &one, 8), &["--grad-accum", "2"]);
        one_rank(&with(one_args, &bf16));
        let zero_args = with(new_run(&data, &zero, 8), &["--zero", "1"]);
        run(cmd, &with(zero_args, &bf16));
        assert_same_run(&one, &zero);
        let f32_run = dir.path().join("f32");
        one_rank(&with(new_run(&data, &f32_run, 8), &["--grad-accum", "2"]));
        assert_ne!(step_losses(&f32_run), step_losses(&one));
    }

    #[test]
    fn ranks_talk_over_tcp_on_loopback() {
        let Some(cmd) = mpirun(2, true) else { return };
        let dir = tempfile::tempdir().unwrap();
        let data = corpus(dir.path());
        let (one, tcp) = (dir.path().join("one"), dir.path().join("tcp"));
        one_rank(&with(new_run(&data, &one, 6), &["--grad-accum", "2"]));
        run(cmd, &with(new_run(&data, &tcp, 6), &["--zero", "1"]));
        assert_same_run(&one, &tcp);
    }

    /// The process id of rank `rank` of the run writing into `out`.
    fn rank_pid(out: &Path, rank: usize) -> Option<u32> {
        let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
        let out = out.to_str().unwrap();
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .find_map(|entry| {
                let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
                let environ = std::fs::read(entry.path().join("environ")).ok()?;
                let has = |hay: &[u8], needle: &str| {
                    hay.split(|&b| b == 0).any(|part| part == needle.as_bytes())
                };
                (has(&cmdline, bin()) && has(&cmdline, out) && has(&environ, &wanted))
                    .then_some(pid)
            })
    }

    fn logged_step(out: &Path) -> u64 {
        let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["step"].as_u64())
            .max()
            .unwrap_or(0)
    }

    /// Start `cmd`, wait for step `at` to be logged, send `signal` to rank 1;
    /// returns the launcher's output and how long it took to end after the signal.
    fn signal_rank_1(mut cmd: Command, out: &Path, at: u64, signal: &str) -> (Output, Duration) {
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while logged_step(out) < at {
            assert!(started.elapsed() < Duration::from_secs(120), "no progress");
            std::thread::sleep(Duration::from_millis(20));
        }
        let pid = rank_pid(out, 1).expect("rank 1 is running");
        let sent = Instant::now();
        let killed = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let output = child.wait_with_output().unwrap();
        (output, sent.elapsed())
    }

    #[test]
    fn a_rank_killed_takes_the_run_down_and_the_checkpoint_resumes_on_one_rank() {
        let Some(mut cmd) = mpirun(2, false) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let data = corpus(dir.path());
        let (whole, killed) = (dir.path().join("whole"), dir.path().join("killed"));
        let steps = 200;
        let every_step = ["--checkpoint-interval", "1"];
        one_rank(&with(
            new_run(&data, &whole, steps),
            &[&every_step[..], &["--grad-accum", "2"]].concat(),
        ));
        cmd.args(with(new_run(&data, &killed, steps), &every_step));
        let (output, took) = signal_rank_1(cmd, &killed, 5, "-KILL");
        assert!(
            !output.status.success(),
            "the launcher reports the dead rank"
        );
        assert!(
            took < Duration::from_secs(30),
            "the other rank ended {took:?} after"
        );
        let done = logged_step(&killed);
        assert!(done < steps, "killed at step {done}, before the end");
        // The checkpoint is whole: one rank resumes it, accumulating what two ranks did.
        let resume = [
            "train",
            "--resume",
            killed.to_str().unwrap(),
            "--grad-accum",
            "2",
            "-q",
        ];
        one_rank(&resume.map(String::from));
        assert_same_run(&whole, &killed);
    }

    #[test]
    fn a_rank_that_hangs_makes_the_other_stop_with_an_error() {
        let Some(mut cmd) = mpirun(2, false) else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let data = corpus(dir.path());
        let out = dir.path().join("hung");
        cmd.env("LMFORGE_DIST_TIMEOUT_S", "6");
        cmd.args(new_run(&data, &out, 100_000));
        let (output, took) = signal_rank_1(cmd, &out, 3, "-STOP");
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(log.contains("error: rank 0 of 2"), "{log}");
        assert!(log.contains("did not answer for 6 s"), "{log}");
        assert!(took < Duration::from_secs(60), "stopped {took:?} after");
    }
}

#[cfg(not(feature = "mpi"))]
#[test]
fn a_launch_of_several_ranks_is_refused_without_mpi() {
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let out = dir.path().join("run");
    for (size, rank) in [
        ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"),
        ("PMI_SIZE", "PMI_RANK"),
    ] {
        let output = Command::new(bin())
            .args(new_run(&data, &out, 2))
            .env(size, "2")
            .env(rank, "1")
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{log}");
        assert!(log.contains("rank 1 of 2"), "{log}");
        assert!(
            log.contains("cargo build --release --features mpi"),
            "{log}"
        );
        assert!(!out.exists(), "nothing written");
    }
    eprintln!("the MPI tests need `cargo test --features mpi --test mpi`");
}
