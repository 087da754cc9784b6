"""Training speed and memory of lmforge next to PyTorch eager, same model, same
shapes, same thread count, measured in one run (each in its own process,
alternating, so both see the same machine load).

    cargo build --release
    python3 bench/compare_train.py --preset char-cpu --threads 2
    python3 bench/compare_train.py --preset gpt2 --block 64 --batch 4 --threads 2 --steps 6
    python3 bench/compare_train.py --preset char-cpu --threads 1
    python3 bench/compare_train.py --preset gpt2 --block 64 --batch 4 --steps 6 --dtype bf16

Prints each side's median tokens/s, step time and peak RSS, the ratios, and the
speed ratio of each round (the two sides of a round run back to back, so a
round's ratio is the least disturbed by load from elsewhere on the machine).
The PyTorch side is bench/torch_train.py: nanoGPT's model (tools/reference_gpt.py,
attention by F.scaled_dot_product_attention(is_causal=True)), eager, float32; with
--dtype bf16 both sides take bf16 products with f32 weights and optimizer: PyTorch's
forward under torch.autocast("cpu", dtype=torch.bfloat16), lmforge `--dtype bf16`.

    python3 bench/compare_train.py --preset char-cpu --compare-with /tmp/lmforge-old

also times another lmforge binary (e.g. the build before a change) in the same
rounds and prints the new/old ratio.
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
    p.add_argument("--compare-with", help="another lmforge binary, timed in the same rounds")
    p.add_argument("--dtype", choices=("f32", "bf16"), default="f32", help="both sides' product type")
    a = p.parse_args()
    shape = dict(PRESETS[a.preset])
    shape["block"] = a.block or shape["block"]
    shape["batch"] = a.batch or shape["batch"]
    torch_cmd = [sys.executable, os.path.join(ROOT, "bench", "torch_train.py"),
                 "--n-layer", str(shape["n_layer"]), "--n-head", str(shape["n_head"]), "--n-embd", str(shape["n_embd"]),
                 "--block", str(shape["block"]), "--batch", str(shape["batch"]), "--vocab", str(shape["vocab"]),
                 "--threads", str(a.threads), "--steps", str(a.steps + a.warmup_steps), "--warmup-steps", str(a.warmup_steps),
                 "--bias" if shape["bias"] else "--no-bias", "--dtype", a.dtype]
    def lmforge_cmd(binary):
        return [binary, "bench", "train", "--preset", a.preset, "--vocab", str(shape["vocab"]),
                "--block", str(shape["block"]), "--batch", str(shape["batch"]), "--grad-accum", "1",
                "--threads", str(a.threads), "--steps", str(a.steps), "--warmup-steps", str(a.warmup_steps),
                "--dtype", a.dtype]
    sides = [("torch", torch_cmd), ("ours", lmforge_cmd(a.lmforge))]
    if a.compare_with:
        sides.append(("other", lmforge_cmd(a.compare_with)))
    runs = {name: [] for name, _ in sides}
    for i in range(a.rounds):
        # Rotate which side goes first: shared machines drift within seconds.
        for name, cmd in sides[i % len(sides):] + sides[:i % len(sides)]:
            runs[name].append(run(cmd))
    torch_runs, ours_runs = runs["torch"], runs["ours"]
    def summary(runs, side):
        return {k: statistics.median(number(r, f"{side} {k}") for r in runs)
                for k in ("tokens/s", "step ms", "peak RSS MiB")}
    t, o = summary(torch_runs, "torch"), summary(ours_runs, "lmforge")
    round_ratios = [number(ours, "lmforge tokens/s") / number(theirs, "torch tokens/s")
                    for ours, theirs in zip(ours_runs, torch_runs)]
    print(f"{a.preset}: n_layer {shape['n_layer']}, n_embd {shape['n_embd']}, block {shape['block']}, "
          f"batch {shape['batch']}, vocab {shape['vocab']}, {a.threads} threads, {a.rounds} rounds, {a.dtype}")
    print(f"{'':10}{'tokens/s':>12}{'step ms':>12}{'peak RSS MiB':>14}")
    print(f"{'pytorch':10}{t['tokens/s']:12.0f}{t['step ms']:12.1f}{t['peak RSS MiB']:14.0f}")
    print(f"{'lmforge':10}{o['tokens/s']:12.0f}{o['step ms']:12.1f}{o['peak RSS MiB']:14.0f}")
    print(f"speed ratio lmforge/pytorch: {o['tokens/s'] / t['tokens/s']:.2f}x; "
          f"memory ratio: {o['peak RSS MiB'] / t['peak RSS MiB']:.2f}x")
    print("per-round speed ratios: " + ", ".join(f"{r:.2f}" for r in round_ratios)
          + f" (median {statistics.median(round_ratios):.2f}x)")
    if a.compare_with:
        other = summary(runs["other"], "lmforge")
        print(f"{'other':10}{other['tokens/s']:12.0f}{other['step ms']:12.1f}{other['peak RSS MiB']:14.0f}"
              f"   ({a.compare_with})")
        pair = [number(x, "lmforge tokens/s") / number(y, "lmforge tokens/s")
                for x, y in zip(runs["ours"], runs["other"])]
        print(f"speed ratio lmforge/other: {o['tokens/s'] / other['tokens/s']:.3f}x; per round: "
              + ", ".join(f"{r:.3f}" for r in pair) + f" (median {statistics.median(pair):.3f}x)")


if __name__ == "__main__":
    main()
