"""Llama-family speed of lmforge next to PyTorch / transformers, in one run, same threads.

    cargo build --release
    /root/bench-venv/bin/python bench/compare_llama.py decode --threads 2
    /root/bench-venv/bin/python bench/compare_llama.py train --threads 2

decode: a SmolLM2-135M-shaped model (30 layers, 576 dims, 9 heads over 3 key/value heads,
  vocabulary 49152, random weights), greedy, with the KV cache: `lmforge bench sample --preset
  smollm-135m` against transformers' LlamaForCausalLM.generate (attn_implementation="sdpa", its cache).
train: llama-char (4 layers, 128 dims, 4 heads over 2, SwiGLU 352, block 64, batch 12, vocab 65):
  `lmforge bench train --preset llama-char` against an eager PyTorch loop with torch.optim.AdamW and
  gradient clipping over the same model written nanoGPT-style (F.rms_norm, F.scaled_dot_product_attention
  with enable_gqa; the default, the stronger reference), or over transformers' LlamaForCausalLM
  (sdpa) with --reference hf.
Each side runs in its own process; sides alternate over --rounds; per-round ratios and medians printed.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOLLM = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
              num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
              rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True)
LLAMA_CHAR = dict(vocab_size=65, hidden_size=128, intermediate_size=352, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                  rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=True)


def model(shape):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(**shape)
    m = LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa")
    assert m.config._attn_implementation == "sdpa"
    return m


def torch_decode(a):
    import torch
    m = model(SMOLLM).eval()
    prompt = torch.randint(0, SMOLLM["vocab_size"], (1, a.prompt_tokens))
    mask = torch.ones_like(prompt)
    gen = dict(do_sample=False, use_cache=True, pad_token_id=0, attention_mask=mask)
    with torch.no_grad():
        m.generate(prompt, max_new_tokens=4, min_new_tokens=4, **gen)
        t0 = time.perf_counter()
        m.generate(prompt, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, **gen)
    print(f"torch tokens/s: {a.new_tokens / (time.perf_counter() - t0):.2f}")


def minimal_llama(shape):
    """The same model written as nanoGPT writes GPT: F.rms_norm, rotary tables made once,
    F.scaled_dot_product_attention (is_causal, enable_gqa), SwiGLU, tied head; no framework
    overhead around it (the stronger eager reference)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    c, nh, nkv, inter = (shape[k] for k in ("hidden_size", "num_attention_heads",
                                            "num_key_value_heads", "intermediate_size"))
    hs, eps, t_max = c // nh, shape["rms_norm_eps"], shape["max_position_embeddings"]
    inv_freq = 1.0 / shape["rope_theta"] ** (torch.arange(0, hs, 2).float() / hs)
    angles = torch.outer(torch.arange(t_max).float(), inv_freq)
    cos, sin = torch.cat([angles.cos()] * 2, -1), torch.cat([angles.sin()] * 2, -1)

    def rope(x):
        t = x.shape[2]
        x1, x2 = x.chunk(2, dim=-1)
        return x * cos[:t] + torch.cat([-x2, x1], -1) * sin[:t]

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.n1, self.n2 = nn.Parameter(torch.ones(c)), nn.Parameter(torch.ones(c))
            self.qkv = nn.Linear(c, c + 2 * nkv * hs, bias=False)
            self.o = nn.Linear(c, c, bias=False)
            self.gate_up = nn.Linear(c, 2 * inter, bias=False)
            self.down = nn.Linear(inter, c, bias=False)

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.qkv(F.rms_norm(x, (c,), self.n1, eps)).split([c, nkv * hs, nkv * hs], -1)
            q = rope(q.view(b, t, nh, hs).transpose(1, 2))
            k = rope(k.view(b, t, nkv, hs).transpose(1, 2))
            v = v.view(b, t, nkv, hs).transpose(1, 2)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            x = x + self.o(y.transpose(1, 2).reshape(b, t, c))
            gate, up = self.gate_up(F.rms_norm(x, (c,), self.n2, eps)).chunk(2, -1)
            return x + self.down(F.silu(gate) * up)

    class Llama(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(shape["vocab_size"], c)
            self.blocks = nn.ModuleList(Block() for _ in range(shape["num_hidden_layers"]))
            self.norm = nn.Parameter(torch.ones(c))

        def forward(self, idx):
            x = self.wte(idx)
            for block in self.blocks:
                x = block(x)
            return F.rms_norm(x, (c,), self.norm, eps) @ self.wte.weight.T

    torch.manual_seed(0)
    return Llama()


def torch_train(a):
    import torch
    import torch.nn.functional as F
    if a.reference == "hf":
        m = model(LLAMA_CHAR).train()
        forward = lambda x: m(input_ids=x).logits  # noqa: E731
    else:
        m = minimal_llama(LLAMA_CHAR).train()
        forward = m
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    b, t, v = 12, 64, LLAMA_CHAR["vocab_size"]
    g = torch.Generator().manual_seed(0)
    times = []
    for step in range(a.warmup_steps + a.steps):
        x, y = torch.randint(0, v, (b, t), generator=g), torch.randint(0, v, (b, t), generator=g)
        t0 = time.perf_counter()
        logits = forward(x)
        loss = F.cross_entropy(logits.view(-1, v), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        if step >= a.warmup_steps:
            times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1000
    print(f"torch step ms: {ms:.2f}\ntorch tokens/s: {b * t / ms * 1000:.1f}")


def lmforge_cmd(a):
    exe = os.path.join(ROOT, "target", "release", "lmforge")
    if a.what == "decode":
        return [exe, "bench", "sample", "--preset", "smollm-135m", "--vocab", "49152",
                "--threads", str(a.threads), "--prompt-tokens", str(a.prompt_tokens),
                "--new-tokens", str(a.new_tokens)]
    return [exe, "bench", "train", "--preset", "llama-char", "--vocab", "65", "--threads", str(a.threads),
            "--steps", str(a.steps), "--warmup-steps", str(a.warmup_steps)]


def run(cmd, env=None):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{out.stderr}")
    return out.stdout


def number(text, key):
    m = re.search(re.escape(key) + r":\s*([0-9.]+)", text)
    return float(m.group(1)) if m else float("nan")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["decode", "train"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prompt-tokens", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup-steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--reference", choices=["minimal", "hf"], default="minimal",
                   help="train: a nanoGPT-style Llama (default) or transformers' LlamaForCausalLM")
    p.add_argument("--torch-side", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.torch_side:
        import torch
        torch.set_num_threads(a.threads)
        return torch_decode(a) if a.what == "decode" else torch_train(a)
    torch_cmd = [sys.executable] + sys.argv + ["--torch-side"]
    ours_key = "lmforge sample tokens/s" if a.what == "decode" else "lmforge tokens/s"
    ratios, ours_all, theirs_all = [], [], []
    for i in range(a.rounds):
        sides = [("torch", torch_cmd), ("ours", lmforge_cmd(a))]
        outs = dict((name, run(cmd)) for name, cmd in (sides if i % 2 == 0 else sides[::-1]))
        ours, theirs = number(outs["ours"], ours_key), number(outs["torch"], "torch tokens/s")
        ours_all.append(ours)
        theirs_all.append(theirs)
        ratios.append(ours / theirs)
        print(f"round {i + 1}: lmforge {ours:.1f} tok/s, pytorch {theirs:.1f} tok/s, ratio {ours / theirs:.2f}x")
    print(f"{a.what}, {a.threads} threads: lmforge {statistics.median(ours_all):.1f} tok/s, pytorch "
          f"{statistics.median(theirs_all):.1f} tok/s, median ratio {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
