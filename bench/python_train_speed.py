#!/usr/bin/env python3
"""Training tokens/s from Python (`lmforge.train`) against the command line
(`lmforge train`), same options, same machine, alternating runs.

    python bench/python_train_speed.py [--rounds 3]

Prints the median of each run's per-step tokens/s (metrics.jsonl, the first
steps dropped as warm-up) for each shape, and the ratio Python / CLI. Needs
the package installed (`pip install ./python`) and target/release/lmforge.
"""

import argparse
import json
import statistics
import subprocess
import tempfile
from pathlib import Path

import lmforge

REPO = Path(__file__).resolve().parent.parent
SHAPES = {
    "char-cpu": dict(preset="char-cpu", max_iters=40, eval_interval=1000, eval_iters=1),
    "gpt2 (124M, batch 1 x block 64)": dict(preset="gpt2", max_iters=8, batch=1, block=64,
                                            eval_interval=1000, eval_iters=1),
}
WARMUP = 3


def median_tokens_per_sec(run: Path) -> float:
    steps = [json.loads(line) for line in open(run / "metrics.jsonl")]
    rates = [s["tokens_per_sec"] for s in steps if "tokens_per_sec" in s][WARMUP:]
    return statistics.median(rates)


def flags(options: dict) -> list:
    out = []
    for key, value in options.items():
        out += [f"--{key.replace('_', '-')}", str(value)]
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    cli = REPO / "target" / "release" / "lmforge"
    work = Path(tempfile.mkdtemp())
    for name, options in SHAPES.items():
        rates = {"cli": [], "python": []}
        for r in range(args.rounds):
            out = work / f"cli-{name[:4]}-{r}"
            subprocess.run([str(cli), "train", "--quiet", "--plot", "none", "--threads",
                            str(args.threads), "--out", str(out), *flags(options)], check=True)
            rates["cli"].append(median_tokens_per_sec(out))
            out = work / f"py-{name[:4]}-{r}"
            lmforge.train(out=out, threads=args.threads, plot="none", **options).wait()
            rates["python"].append(median_tokens_per_sec(out))
        cli_rate, py_rate = (statistics.median(rates[k]) for k in ("cli", "python"))
        print(f"{name}: CLI {cli_rate:.0f} tok/s, Python {py_rate:.0f} tok/s, "
              f"Python / CLI = {py_rate / cli_rate:.3f}  (runs: {rates})")


if __name__ == "__main__":
    main()
