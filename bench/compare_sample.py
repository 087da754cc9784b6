"""Generation speed of lmforge (KV cache) next to Hugging Face transformers'
`generate` (with its KV cache, attn_implementation="sdpa"), for a GPT-2
124M-shaped model with random weights, greedy decoding, same thread count,
measured in one run.

    cargo build --release
    pip install transformers
    python3 bench/compare_sample.py --threads 2 --prompt-tokens 16 --new-tokens 64
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def torch_tokens_per_sec(a):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    config = GPT2Config(n_layer=12, n_head=12, n_embd=768, n_positions=1024, vocab_size=50257)
    # The strongest attention transformers offers on a CPU: PyTorch's fused kernel.
    model = GPT2LMHeadModel._from_config(config, attn_implementation="sdpa").eval()
    assert model.config._attn_implementation == "sdpa", model.config._attn_implementation
    prompt = torch.randint(0, 50257, (1, a.prompt_tokens))
    def timed(new):
        t0 = time.perf_counter()
        model.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False, use_cache=True,
                       pad_token_id=0)
        return time.perf_counter() - t0
    with torch.no_grad():
        timed(4)
        # As `lmforge bench sample` counts: the tokens after the first, without the prompt's
        # forward pass (the time of a 1-token generate, prompt included, is taken off).
        return (a.new_tokens - 1) / (timed(a.new_tokens) - timed(1))


def lmforge_tokens_per_sec(a, binary):
    cmd = [binary, "bench", "sample", "--preset", "gpt2", "--threads", str(a.threads),
           "--prompt-tokens", str(a.prompt_tokens), "--new-tokens", str(a.new_tokens)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(out.stderr)
    return float(re.search(r"lmforge sample tokens/s: ([0-9.]+)", out.stdout).group(1))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--lmforge", default=os.path.join(ROOT, "target", "release", "lmforge"))
    p.add_argument("--compare-with", help="another lmforge binary, timed in the same rounds")
    a = p.parse_args()
    sides = [("torch", lambda: torch_tokens_per_sec(a)), ("ours", lambda: lmforge_tokens_per_sec(a, a.lmforge))]
    if a.compare_with:
        sides.append(("other", lambda: lmforge_tokens_per_sec(a, a.compare_with)))
    runs = {name: [] for name, _ in sides}
    for i in range(a.rounds):
        # Rotate which side goes first: shared machines drift within seconds.
        for name, measure in sides[i % len(sides):] + sides[:i % len(sides)]:
            runs[name].append(measure())
    torch_runs, ours = runs["torch"], runs["ours"]
    t, o = statistics.median(torch_runs), statistics.median(ours)
    round_ratios = [x / y for x, y in zip(ours, torch_runs)]
    print(f"gpt2 124M shape, prompt {a.prompt_tokens} + {a.new_tokens} new tokens, greedy, {a.threads} threads")
    print(f"transformers generate tokens/s: {t:.1f}")
    print(f"lmforge sample tokens/s: {o:.1f}")
    print(f"speed ratio lmforge/transformers: {o / t:.2f}x")
    print("per-round speed ratios: " + ", ".join(f"{r:.2f}" for r in round_ratios)
          + f" (median {statistics.median(round_ratios):.2f}x)")
    if a.compare_with:
        other = runs["other"]
        pair = [x / y for x, y in zip(ours, other)]
        print(f"other lmforge sample tokens/s: {statistics.median(other):.1f} ({a.compare_with})")
        print(f"speed ratio lmforge/other: {o / statistics.median(other):.3f}x; per round: "
              + ", ".join(f"{r:.3f}" for r in pair) + f" (median {statistics.median(pair):.3f}x)")


if __name__ == "__main__":
    main()
