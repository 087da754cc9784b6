//! Fault injection: a training process (the real binary, a tiny model, a
//! checkpoint after every step) is killed with SIGKILL at random points,
//! several times, and resumed each time. The run must end on weights and
//! optimizer state bit-identical to an uninterrupted run's, with the same
//! losses logged, and with no temporary file left behind. Bounded in time:
//! about ten seconds on two cores, and never more than a minute.

#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const STEPS: u64 = 40;
const KILLS: usize = 6;
const DEADLINE: Duration = Duration::from_secs(60);

/// A small deterministic generator; the seed is printed so a failure can be
/// looked at again (the kill timing itself still varies).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn corpus(dir: &Path) -> PathBuf {
    let path = dir.join("corpus.txt");
    let text: String = (0..600)
        .map(|i| format!("line {i}: a stitch in time saves nine, or so they say.\n"))
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// The command that starts the run in `out`, or resumes it once it has a checkpoint.
fn command(data: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lmforge"));
    cmd.arg("train");
    if out.join("train_state.safetensors").exists() {
        cmd.args(["--resume", out.to_str().unwrap()]);
    } else {
        cmd.args(["--data", data.to_str().unwrap()]);
        cmd.args(["--out", out.to_str().unwrap(), "--overwrite"]);
        cmd.args(["--n-layer", "1", "--n-head", "2", "--n-embd", "16"]);
        cmd.args(["--block", "16", "--batch", "4", "--dropout", "0.1"]);
        cmd.args(["--eval-interval", "10", "--eval-iters", "1"]);
        cmd.args(["--checkpoint-interval", "1", "--warmup-iters", "5"]);
    }
    cmd.args(["--max-iters", &STEPS.to_string(), "--threads", "1", "-q"]);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    cmd
}

/// The last step `metrics.jsonl` has logged (0 if none).
fn logged_step(out: &Path) -> u64 {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["step"].as_u64())
        .max()
        .unwrap_or(0)
}

/// Wait until the child has logged step `target` (or exited), then let it
/// run a random sliver more and kill it with SIGKILL. True if it was killed.
fn kill_at(child: &mut Child, out: &Path, target: u64, rng: &mut Rng, start: Instant) -> bool {
    while logged_step(out) < target {
        if child.try_wait().unwrap().is_some() || start.elapsed() > DEADLINE {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    std::thread::sleep(Duration::from_micros(rng.below(3000)));
    let killed = child.try_wait().unwrap().is_none();
    child.kill().unwrap(); // SIGKILL on Unix: no handler, no clean-up
    child.wait().unwrap();
    killed
}

fn finish(data: &Path, out: &Path) {
    let result = command(data, out).output().unwrap();
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{err}");
}

/// Every tensor of a safetensors file, by name, as raw bytes.
fn tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut all: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| (name, t.data().to_vec()))
        .collect();
    all.sort();
    all
}

/// The `(step, train_loss)` lines of the log.
fn losses(out: &Path) -> Vec<(u64, String)> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["eval"].is_null())
        .map(|v| (v["step"].as_u64().unwrap(), v["train_loss"].to_string()))
        .collect()
}

#[test]
fn killed_and_resumed_runs_end_bit_identical_with_no_temporaries() {
    let start = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let data = corpus(dir.path());
    let (full, killed) = (dir.path().join("full"), dir.path().join("killed"));
    finish(&data, &full);

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill schedule seed {seed}");
    let mut rng = Rng(seed);
    // Random steps to kill at, in order; 0 kills before the first checkpoint.
    let mut targets: Vec<u64> = (0..KILLS).map(|_| rng.below(STEPS - 1)).collect();
    targets.sort_unstable();
    let mut kills = 0;
    for target in targets {
        let mut child = command(&data, &killed).spawn().unwrap();
        kills += kill_at(&mut child, &killed, target, &mut rng, start) as usize;
    }
    finish(&data, &killed);
    eprintln!("{kills} kills landed");
    assert!(start.elapsed() < DEADLINE, "took {:?}", start.elapsed());
    assert!(kills >= KILLS / 2, "only {kills} of {KILLS} kills landed");

    for file in ["model.safetensors", "train_state.safetensors"] {
        let (a, b) = (tensors(&full.join(file)), tensors(&killed.join(file)));
        assert!(
            a == b,
            "{file}: weights differ after {kills} kills (seed {seed})"
        );
    }
    let model = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(
        model(&full) == model(&killed),
        "model.safetensors bytes differ"
    );
    assert_eq!(losses(&full), losses(&killed), "seed {seed}");
    let left: Vec<String> = std::fs::read_dir(&killed)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp"))
        .collect();
    assert!(left.is_empty(), "temporaries left: {left:?} (seed {seed})");
}
