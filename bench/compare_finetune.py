"""Fine-tuning speed and memory, lmforge against PyTorch on the same machine.

    python3 bench/compare_finetune.py --binary target/release/lmforge [--model gpt2|gpt2-xl]
        [--lora-rank R] [--block 256] [--batch 1] [--steps 4] [--threads 2] [--rounds 3]

Writes a random GPT-2 (`gpt2`: 124M, `gpt2-xl`: 1.5B) with transformers'
save_pretrained into a temporary folder (nothing is downloaded), then
alternates, in the same run:
  * lmforge: `train --init-from FOLDER --data TEXT` (full fine-tune, or
    `--lora-rank R`), its tokens/s read from the final summary line and its
    peak RSS from /usr/bin/time-style getrusage of the child;
  * PyTorch eager: GPT2LMHeadModel (attn_implementation="sdpa"), the same
    batch and block, torch.optim.AdamW over the trained parameters (with
    --lora-rank: PEFT's LoRA on c_attn, c_proj, c_fc, if peft is installed),
    timed over the same number of steps after one warm-up step.
Prints each round's tokens/s and the ratio lmforge / PyTorch, and the median.
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

SIZES = {"gpt2": dict(n_layer=12, n_head=12, n_embd=768), "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600)}


def write_model(folder, name):
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50257, n_positions=1024, **SIZES[name])
    GPT2LMHeadModel(config).save_pretrained(folder, safe_serialization=True)


def write_tokenizer(binary, folder, text, tmp):
    """GPT-2's tokenizer.json, as lmforge writes it from its embedded ranks
    (a one-step run with --tokenizer gpt2), into the model folder."""
    run = os.path.join(tmp, "tok")
    subprocess.run([binary, "train", "--tokenizer", "gpt2", "--data", text, "--max-iters", "1",
                    "--n-layer", "1", "--n-embd", "8", "--n-head", "1", "--block", "8",
                    "--eval-iters", "1", "--quiet", "--out", run], check=True, capture_output=True)
    os.replace(os.path.join(run, "tokenizer.json"), os.path.join(folder, "tokenizer.json"))


def lmforge_run(args, folder, text, out):
    cmd = [args.binary, "train", "--init-from", folder, "--data", text, "--out", out, "--overwrite",
           "--block", str(args.block), "--batch", str(args.batch), "--max-iters", str(args.steps + 1),
           "--eval-interval", "1000000", "--eval-iters", "1", "--checkpoint-interval", "1000000",
           "--threads", str(args.threads), "--quiet"]
    if args.lora_rank:
        cmd += ["--lora-rank", str(args.lora_rank)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - t0
    if p.returncode != 0:
        sys.exit(f"lmforge failed: {p.stderr}")
    # The steps after the first (as on the PyTorch side, which warms up once),
    # from the run's own per-step log.
    import json
    with open(os.path.join(out, "metrics.jsonl")) as f:
        steps = [json.loads(l) for l in f if '"tokens_per_sec"' in l]
    tok_s = statistics.median(s["tokens_per_sec"] for s in steps[1:])
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return tok_s, max(rss, before) / 1024, wall


def torch_run(args, folder, tokens):
    torch.set_num_threads(args.threads)
    model = GPT2LMHeadModel.from_pretrained(folder, attn_implementation="sdpa")
    model.train()
    if args.lora_rank:
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=args.lora_rank, lora_alpha=2 * args.lora_rank,
                                                 target_modules=["c_attn", "c_proj", "c_fc"],
                                                 fan_in_fan_out=True, lora_dropout=0.0))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-5, weight_decay=0.0)
    n = args.batch * args.block
    g = torch.Generator().manual_seed(0)

    def step():
        i = torch.randint(0, len(tokens) - args.block - 1, (args.batch,), generator=g)
        x = torch.stack([tokens[j:j + args.block] for j in i])
        y = torch.stack([tokens[j + 1:j + args.block + 1] for j in i])
        logits = model(x).logits
        loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    t0 = time.time()
    for _ in range(args.steps):
        step()
    return n * args.steps / (time.time() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/lmforge")
    ap.add_argument("--model", default="gpt2", choices=sorted(SIZES))
    ap.add_argument("--lora-rank", type=int, default=0)
    ap.add_argument("--block", type=int, default=256)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=4, help="timed steps, after one warm-up step")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-torch", action="store_true", help="lmforge only (e.g. for memory)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, args.model)
        write_model(folder, args.model)
        text = os.path.join(tmp, "text.txt")
        here = os.path.dirname(os.path.abspath(__file__))
        with open(os.path.join(here, "..", "..", "shared", "data", "tinyshakespeare.txt")) as f:
            corpus = f.read()[:200_000]
        with open(text, "w") as f:
            f.write(corpus)
        write_tokenizer(args.binary, folder, text, tmp)
        tokens = torch.randint(0, 50257, (200_000,), generator=torch.Generator().manual_seed(1))
        ratios = []
        for r in range(args.rounds):
            ours, rss, wall = lmforge_run(args, folder, text, os.path.join(tmp, "run"))
            line = f"round {r + 1}: lmforge {ours:.0f} tok/s (peak RSS {rss:.0f} MiB, {wall:.0f} s in all)"
            if not args.no_torch:
                theirs = torch_run(args, folder, tokens)
                ratios.append(ours / theirs)
                line += f", PyTorch {theirs:.0f} tok/s, ratio {ours / theirs:.2f}x"
            print(line, flush=True)
        if ratios:
            print(f"median ratio lmforge / PyTorch: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
