"""Data parallel on one machine: 2 ranks x 1 thread (mpirun) against 1 rank
x 2 threads, the same global batch (the one rank accumulates 2 micro-batches,
so both sides compute the same steps, bit for bit), in alternating rounds.

    cargo build --release --features mpi
    python3 bench/data_parallel.py --preset char-cpu --steps 30
    python3 bench/data_parallel.py --preset gpt2 --block 64 --batch 4 --steps 4
    python3 bench/data_parallel.py --preset gpt2 --block 64 --batch 4 --steps 4 --zero 1

Prints each side's median tokens/s over the steps after the first, the ratio
2 ranks / 1 rank, and the median time the ranks spent per step in the
collectives (the gradient all-reduce, or ZeRO-1's reduce-scatter and
all-gathers), which includes waiting for the slower rank.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def steps_of(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    steps = [l for l in lines if "tokens_per_sec" in l]
    return steps[1:]  # the first step touches every fresh buffer


def run(cmd, env=None):
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="char-cpu")
    p.add_argument("--block", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--zero", default="0")
    p.add_argument("--lmforge", default=os.path.join(ROOT, "target", "release", "lmforge"))
    a = p.parse_args()
    shape = ["--preset", a.preset, "--max-iters", str(a.steps), "--eval-interval", str(10 * a.steps),
             "--eval-iters", "1", "--checkpoint-interval", str(10 * a.steps), "--plot", "none", "-q"]
    if a.block:
        shape += ["--block", str(a.block)]
    if a.batch:
        shape += ["--batch", str(a.batch)]
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    one, two, comm = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            out1, out2 = os.path.join(tmp, f"one{r}"), os.path.join(tmp, f"two{r}")
            run([a.lmforge, "train", *shape, "--threads", "2", "--grad-accum", "2", "--out", out1])
            run(["mpirun", "--oversubscribe", "--bind-to", "none", "-np", "2", a.lmforge, "train", *shape,
                 "--threads", "1", "--grad-accum", "1", "--zero", a.zero, "--out", out2], env)
            s1, s2 = steps_of(out1), steps_of(out2)
            one += [s["tokens_per_sec"] for s in s1]
            two += [s["tokens_per_sec"] for s in s2]
            comm += [s["comm_s"] for s in s2]
            print(f"round {r}: 1x2 {statistics.median([s['tokens_per_sec'] for s in s1]):.0f} tok/s, "
                  f"2x1 {statistics.median([s['tokens_per_sec'] for s in s2]):.0f} tok/s", flush=True)
    t1, t2, c = statistics.median(one), statistics.median(two), statistics.median(comm)
    print(f"{a.preset} block {a.block or 'preset'} batch {a.batch or 'preset'} zero {a.zero}: "
          f"1 rank x 2 threads (grad-accum 2) {t1:.0f} tok/s; 2 ranks x 1 thread {t2:.0f} tok/s; "
          f"ratio 2x1 / 1x2 = {t2 / t1:.2f}x; collectives {1000 * c:.1f} ms per step (median)")


if __name__ == "__main__":
    main()
