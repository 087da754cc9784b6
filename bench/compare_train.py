"""Training speed and memory of lmforge next to PyTorch eager, same model, same
shapes, same thread count, measured in one run (each in its own process,
alternating, so both see the same machine load).

    cargo build --release
    python3 bench/compare_train.py --preset char-cpu --threads 2
    python3 bench/compare_train.py --preset gpt2 --block 64 --batch 4 --threads 2 --steps 6
    python3 bench/compare_train.py --preset char-cpu --threads 1

Prints each side's median tokens/s, step time and peak RSS, the ratios, and the
speed ratio of each round (the two sides of a round run back to back, so a
round's ratio is the least disturbed by load from elsewhere on the machine).
The PyTorch side is bench/torch_train.py (nanoGPT-style model from tools/).
"""

import argparse
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Shapes of lmforge's presets, for the PyTorch side (pre-norm, GELU, tied head).
PRESETS = {
    "char-cpu": dict(n_layer=4, n_head=4, n_embd=128, block=64, batch=12, vocab=65, bias=False),
    "char-baby": dict(n_layer=6, n_head=6, n_embd=384, block=256, batch=64, vocab=65, bias=False),
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, block=1024, batch=12, vocab=50257, bias=True),
}


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return out.stdout


def number(text, key):
    m = re.search(re.escape(key) + r":\s*([0-9.]+)", text)
    return float(m.group(1)) if m else float("nan")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="char-cpu", choices=sorted(PRESETS))
    p.add_argument("--block", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2, help="alternating runs of each side")
    p.add_argument("--lmforge", default=os.path.join(ROOT, "target", "release", "lmforge"))
    a = p.parse_args()
    shape = dict(PRESETS[a.preset])
    shape["block"] = a.block or shape["block"]
    shape["batch"] = a.batch or shape["batch"]
    torch_cmd = [sys.executable, os.path.join(ROOT, "bench", "torch_train.py"),
                 "--n-layer", str(shape["n_layer"]), "--n-head", str(shape["n_head"]), "--n-embd", str(shape["n_embd"]),
                 "--block", str(shape["block"]), "--batch", str(shape["batch"]), "--vocab", str(shape["vocab"]),
                 "--threads", str(a.threads), "--steps", str(a.steps + a.warmup_steps), "--warmup-steps", str(a.warmup_steps),
                 "--bias" if shape["bias"] else "--no-bias"]
    ours_cmd = [a.lmforge, "bench", "train", "--preset", a.preset, "--vocab", str(shape["vocab"]),
                "--block", str(shape["block"]), "--batch", str(shape["batch"]), "--grad-accum", "1",
                "--threads", str(a.threads), "--steps", str(a.steps), "--warmup-steps", str(a.warmup_steps)]
    torch_runs, ours_runs = [], []
    for i in range(a.rounds):
        # Alternate which side goes first: shared machines drift within seconds.
        if i % 2 == 0:
            torch_runs.append(run(torch_cmd))
            ours_runs.append(run(ours_cmd))
        else:
            ours_runs.append(run(ours_cmd))
            torch_runs.append(run(torch_cmd))
    def summary(runs, side):
        return {k: statistics.median(number(r, f"{side} {k}") for r in runs)
                for k in ("tokens/s", "step ms", "peak RSS MiB")}
    t, o = summary(torch_runs, "torch"), summary(ours_runs, "lmforge")
    round_ratios = [number(ours, "lmforge tokens/s") / number(theirs, "torch tokens/s")
                    for ours, theirs in zip(ours_runs, torch_runs)]
    print(f"{a.preset}: n_layer {shape['n_layer']}, n_embd {shape['n_embd']}, block {shape['block']}, "
          f"batch {shape['batch']}, vocab {shape['vocab']}, {a.threads} threads, {a.rounds} rounds")
    print(f"{'':10}{'tokens/s':>12}{'step ms':>12}{'peak RSS MiB':>14}")
    print(f"{'pytorch':10}{t['tokens/s']:12.0f}{t['step ms']:12.1f}{t['peak RSS MiB']:14.0f}")
    print(f"{'lmforge':10}{o['tokens/s']:12.0f}{o['step ms']:12.1f}{o['peak RSS MiB']:14.0f}")
    print(f"speed ratio lmforge/pytorch: {o['tokens/s'] / t['tokens/s']:.2f}x; "
          f"memory ratio: {o['peak RSS MiB'] / t['peak RSS MiB']:.2f}x")
    print("per-round speed ratios: " + ", ".join(f"{r:.2f}" for r in round_ratios)
          + f" (median {statistics.median(round_ratios):.2f}x)")


if __name__ == "__main__":
    main()
