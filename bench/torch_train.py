"""PyTorch eager (CPU) baseline for lmforge: trains the same GPT as lmforge's presets and
reports speed (and loss, when given a text file) for comparison.

    python3 bench/torch_train.py                       # char-cpu preset shape, random tokens
    python3 bench/torch_train.py --data ../shared/data/tinyshakespeare.txt \
        --steps 2000 --eval-interval 250

Model: tools/reference_gpt.py GPT, pre-LayerNorm, tanh GELU, tied embeddings, float32
(with --dtype bf16: its forward under torch.autocast("cpu", dtype=torch.bfloat16)),
nanoGPT init (N(0,0.02), c_proj weights N(0, 0.02/sqrt(2*n_layer)), zero biases); biases
off by default (--bias to enable). AdamW with nanoGPT's grouping (params with dim >= 2
decay), betas (0.9, --beta2), cosine LR with linear warmup (nanoGPT get_lr), grad-norm
clipping. With --data: char-level vocab (sorted unique chars), first 90% train / last 10%
val, random windows; otherwise uniformly random tokens of --vocab.

Prints sparse per-step lines, `step N: train loss X, val loss Y` eval lines (with --data),
and at the end `torch tokens/s: ...`, `torch step ms: ...` (medians over the timed steps
after --warmup-steps) and `torch final val loss: ...` (with --data).
"""

import argparse
import contextlib
import math
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
from reference_gpt import GPT, make_config  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-layer", type=int, default=4)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--n-embd", type=int, default=128)
    p.add_argument("--block", type=int, default=64)
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--vocab", type=int, default=65)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup-steps", type=int, default=5, help="untimed steps excluded from the speed median")
    p.add_argument("--bias", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr", type=float, default=1e-4)
    p.add_argument("--warmup-iters", type=int, default=100)
    p.add_argument("--lr-decay-iters", type=int, default=None, help="default: --steps")
    p.add_argument("--beta2", type=float, default=0.99)
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--data", type=str, default=None, help="text file for char-level training")
    p.add_argument("--eval-interval", type=int, default=250)
    p.add_argument("--eval-iters", type=int, default=20)
    p.add_argument("--dtype", choices=("f32", "bf16"), default="f32",
                   help="bf16: forward and loss under torch.autocast('cpu', dtype=torch.bfloat16) "
                        "(f32 weights, gradients and AdamW, as lmforge --dtype bf16)")
    a = p.parse_args()
    if a.lr_decay_iters is None:
        a.lr_decay_iters = a.steps
    return a


def get_lr(it, a):
    """nanoGPT's get_lr: linear warmup, cosine decay to min_lr, then constant."""
    if it < a.warmup_iters:
        return a.lr * (it + 1) / (a.warmup_iters + 1)
    if it > a.lr_decay_iters:
        return a.min_lr
    decay_ratio = (it - a.warmup_iters) / max(1, a.lr_decay_iters - a.warmup_iters)
    decay_ratio = min(max(decay_ratio, 0.0), 1.0)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return a.min_lr + coeff * (a.lr - a.min_lr)


def main():
    a = parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed + 1)

    train_data = val_data = None
    vocab = a.vocab
    if a.data:
        with open(a.data, "r", encoding="utf-8") as f:
            text = f.read()
        chars = sorted(set(text))
        vocab = len(chars)
        stoi = {ch: i for i, ch in enumerate(chars)}
        data = torch.tensor([stoi[c] for c in text], dtype=torch.long)
        n = int(0.9 * len(data))
        train_data, val_data = data[:n], data[n:]
        print(f"data: {a.data}: {len(text)} chars, vocab {vocab}, train {len(train_data)}, val {len(val_data)}")

    def get_batch(split):
        if train_data is None:
            x = torch.randint(0, vocab, (a.batch, a.block + 1), generator=gen)
            return x[:, :-1].contiguous(), x[:, 1:].contiguous()
        d = train_data if split == "train" else val_data
        ix = torch.randint(len(d) - a.block - 1, (a.batch,), generator=gen)
        x = torch.stack([d[i : i + a.block] for i in ix.tolist()])
        y = torch.stack([d[i + 1 : i + 1 + a.block] for i in ix.tolist()])
        return x, y

    cfg = make_config(
        vocab_size=vocab, block_size=a.block, n_layer=a.n_layer, n_head=a.n_head, n_embd=a.n_embd,
        dropout=a.dropout, norm="pre", activation="gelu", tie_embeddings=True, bias=a.bias,
        qkv_bias=a.bias, lm_head_bias=False,
    )
    model = GPT(cfg)  # float32, nanoGPT init
    n_params = sum(p.numel() for p in model.parameters())
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, params {n_params}, {a.dtype}, config {cfg}")

    def precision():
        if a.dtype == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": a.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=a.lr, betas=(0.9, a.beta2),
    )

    @torch.no_grad()
    def estimate_loss():
        model.eval()
        out = {}
        for split in ("train", "val"):
            losses = []
            for _ in range(a.eval_iters):
                with precision():
                    losses.append(model(*get_batch(split))[1].item())
            out[split] = sum(losses) / len(losses)
        model.train()
        return out

    final_val = None
    step_times = []
    log_every = max(1, a.steps // 10)
    model.train()
    for it in range(a.steps):
        if a.data and a.eval_interval > 0 and it % a.eval_interval == 0:
            l = estimate_loss()
            print(f"step {it}: train loss {l['train']:.4f}, val loss {l['val']:.4f}", flush=True)
        lr = get_lr(it, a)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = get_batch("train")
        t0 = time.perf_counter()
        with precision():
            _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if a.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), a.grad_clip)
        opt.step()
        lossf = loss.item()
        dt = time.perf_counter() - t0
        if it >= a.warmup_steps:
            step_times.append(dt)
        if it % log_every == 0 or it == a.steps - 1:
            print(f"iter {it}: loss {lossf:.4f}, time {dt * 1000:.1f} ms, lr {lr:.2e}", flush=True)
    if a.data:
        l = estimate_loss()
        final_val = l["val"]
        print(f"step {a.steps}: train loss {l['train']:.4f}, val loss {l['val']:.4f}")

    if step_times:
        med = statistics.median(step_times)
        print(f"torch tokens/s: {a.batch * a.block / med:.1f}")
        print(f"torch step ms: {med * 1000:.2f}")
    else:
        print("torch tokens/s: n/a (no timed steps; steps <= warmup-steps)")
    if final_val is not None:
        print(f"torch final val loss: {final_val:.4f}")
    import resource  # ru_maxrss is in KiB on Linux

    print(f"torch peak RSS MiB: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}")


if __name__ == "__main__":
    main()
