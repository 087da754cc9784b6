"""Write the PyTorch reference fixtures of the Llama-family layers and models.

Run from the repository root:

    /root/bench-venv/bin/python tools/make_llama_fixtures.py

Writes tests/fixtures/{rmsnorm,rope,swiglu,attention_gqa,model_llama,model_qwen2}.safetensors
(conventions as tools/make_fixtures.py, whose writer and random draws it reuses; tensor names
in tests/fixtures/README.md). The references are transformers' own code where it has it:
`LlamaRMSNorm`, `LlamaRotaryEmbedding` + `apply_rotary_pos_emb` (every `rope_type` lmforge reads),
`repeat_kv` + eager attention, and whole `LlamaForCausalLM` / `Qwen2ForCausalLM` models in
float64 with `torch.optim.AdamW` for three steps.
"""

import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
from transformers.models.llama.modeling_llama import (
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
    repeat_kv,
)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_fixtures import OPTIM, Rng, adamw_for, leaf, model_fixture, store  # noqa: E402

torch.set_num_threads(1)

B, T = 2, 5
C, NH, NKV, I = 16, 4, 2, 24
HS = C // NH
EPS = 1e-5

ROPE = {
    "none": dict(rope_type="default", rope_theta=100.0),
    "linear": dict(rope_type="linear", rope_theta=100.0, factor=2.5),
    # hs 8, theta 100: wavelengths 6.3, 19.9, 62.8, 199 against 32/4 and 32/1: one
    # frequency kept, one blended, two divided by the factor.
    "llama3": dict(rope_type="llama3", rope_theta=100.0, factor=8.0, low_freq_factor=1.0,
                   high_freq_factor=4.0, original_max_position_embeddings=32),
}


def fx_rmsnorm():
    r = Rng(101)
    x = leaf(r.randn(B, T, C, scale=1.3, mean=0.2))
    norm = LlamaRMSNorm(C, eps=EPS).double()
    with torch.no_grad():
        norm.weight.copy_(r.randn(C, scale=0.3, mean=1.0))
    dout = r.randn(B, T, C)
    out = norm(x)
    (out * dout).sum().backward()
    store("rmsnorm.safetensors", dict(x=x, weight=norm.weight, dout=dout, out=out, dx=x.grad,
                                      dweight=norm.weight.grad), {"eps": EPS})


def rope_ref(x, kind, hs):
    """x: (B, T, (NH + 2 NKV) * hs) = [q | k | v]; q and k rotated as LlamaAttention does."""
    cfg = LlamaConfig(hidden_size=NH * hs, num_attention_heads=NH, num_key_value_heads=NKV,
                      max_position_embeddings=64, rope_parameters=dict(ROPE[kind]))
    rot = LlamaRotaryEmbedding(cfg)
    bq, tq, _ = x.shape
    pos = torch.arange(tq)[None, :].expand(bq, tq)
    cos, sin = rot(x, pos)
    q, k, v = x.split([NH * hs, NKV * hs, NKV * hs], dim=2)
    q = q.view(bq, tq, NH, hs).transpose(1, 2)
    k = k.view(bq, tq, NKV, hs).transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    join = lambda h: h.transpose(1, 2).reshape(bq, tq, -1)  # noqa: E731
    return torch.cat([join(q), join(k), v], dim=2)


def fx_rope():
    r = Rng(102)
    hs, tensors = 8, {}
    width = (NH + 2 * NKV) * hs
    for kind in ROPE:
        x = leaf(r.randn(B, 7, width))
        dout = r.randn(B, 7, width)
        out = rope_ref(x, kind, hs)
        (out * dout).sum().backward()
        tensors.update({f"{kind}.x": x, f"{kind}.dout": dout, f"{kind}.out": out, f"{kind}.dx": x.grad})
    md = {"head_size": hs, "n_head": NH, "n_kv_head": NKV, "rope": json.dumps(ROPE, sort_keys=True)}
    store("rope.safetensors", tensors, md)


def fx_swiglu():
    r = Rng(103)
    fc = leaf(r.randn(B * T, 2 * I, scale=2.0))
    dout = r.randn(B * T, I)
    gate, up = fc.split(I, dim=1)
    out = F.silu(gate) * up
    (out * dout).sum().backward()
    store("swiglu.safetensors", dict(fc=fc, dout=dout, out=out, dfc=fc.grad))


def gqa_ref(qkv):
    """Causal attention of NH query heads over NKV shared key/value heads (repeat_kv), eager."""
    q, k, v = qkv.split([C, NKV * HS, NKV * HS], dim=2)
    q = q.view(B, T, NH, HS).transpose(1, 2)
    k = repeat_kv(k.view(B, T, NKV, HS).transpose(1, 2), NH // NKV)
    v = repeat_kv(v.view(B, T, NKV, HS).transpose(1, 2), NH // NKV)
    att = (q @ k.transpose(-2, -1)) / math.sqrt(HS)
    att = att.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    y = torch.softmax(att, dim=-1) @ v
    return y.transpose(1, 2).reshape(B, T, C)


def fx_attention_gqa():
    r = Rng(104)
    qkv = leaf(r.randn(B, T, C + 2 * NKV * HS, scale=1.5, mean=0.1))
    dout = r.randn(B, T, C)
    out = gqa_ref(qkv)
    (out * dout).sum().backward()
    store("attention_gqa.safetensors", dict(qkv=qkv, dout=dout, out=out, dqkv=qkv.grad),
          {"n_head": NH, "n_kv_head": NKV})


class CausalLM(torch.nn.Module):
    """`model(idx, targets) -> (logits, mean cross-entropy)` over a transformers model,
    with its parameters under their Hugging Face names (as model_fixture expects)."""

    def __init__(self, hf):
        super().__init__()
        self.hf = hf

    def named_parameters(self, *args, **kwargs):
        return self.hf.named_parameters(*args, **kwargs)

    def forward(self, idx, targets):
        logits = self.hf(input_ids=idx).logits
        return logits, F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


@torch.no_grad()
def randomize_llama_(model, r):
    for name, p in model.named_parameters():
        if "norm" in name:
            p.copy_(r.randn(*p.shape, scale=0.1, mean=1.0))
        elif name.endswith("bias"):
            p.copy_(r.randn(*p.shape, scale=0.1))
        elif "embed_tokens" in name:
            p.copy_(r.randn(*p.shape, scale=0.5))
        else:
            p.copy_(r.randn(*p.shape, scale=0.8 / math.sqrt(p.shape[1])))


def lmforge_config(hf_cfg, rope, qkv_bias, tie):
    scaling = {k: v for k, v in rope.items() if k not in ("rope_theta",)}
    kind = scaling.pop("rope_type")
    return dict(
        arch="llama", vocab_size=hf_cfg.vocab_size, block_size=hf_cfg.max_position_embeddings,
        n_layer=hf_cfg.num_hidden_layers, n_head=hf_cfg.num_attention_heads, n_embd=hf_cfg.hidden_size,
        dropout=0.0, norm="pre", activation="silu", tie_embeddings=tie, bias=False, qkv_bias=qkv_bias,
        lm_head_bias=False,
        llama=dict(n_kv_head=hf_cfg.num_key_value_heads, intermediate_size=hf_cfg.intermediate_size,
                   rope_theta=rope["rope_theta"], rms_norm_eps=hf_cfg.rms_norm_eps,
                   rope_scaling=dict(rope_type="none" if kind == "default" else kind, **scaling)),
    )


MB, MT, MV = 2, 6, 13


def fx_model(fname, cls, cfg_cls, seed, rope, qkv_bias, tie, n_kv, eps):
    r = Rng(seed)
    idx, targets = r.randint(MV, MB, MT), r.randint(MV, MB, MT)
    hf_cfg = cfg_cls(vocab_size=MV, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=n_kv, max_position_embeddings=8,
                     rms_norm_eps=eps, tie_word_embeddings=tie, rope_parameters=dict(rope),
                     attention_dropout=0.0, attn_implementation="eager")
    if cls is LlamaForCausalLM:
        hf_cfg.attention_bias = qkv_bias
    hf = cls(hf_cfg).double().eval()
    randomize_llama_(hf, r)
    model_fixture(fname, CausalLM(hf), lmforge_config(hf_cfg, rope, qkv_bias, tie), idx, targets)


def main():
    torch.manual_seed(0)
    fx_rmsnorm()
    fx_rope()
    fx_swiglu()
    fx_attention_gqa()
    # Llama: grouped-query attention (4 query heads over 2), untied head, llama3 rope.
    fx_model("model_llama.safetensors", LlamaForCausalLM, LlamaConfig, 110, ROPE["llama3"],
             qkv_bias=False, tie=False, n_kv=2, eps=1e-5)
    # Qwen2: q/k/v biases, tied head, one key/value head (multi-query), plain rope.
    fx_model("model_qwen2.safetensors", Qwen2ForCausalLM, Qwen2Config, 111, ROPE["none"],
             qkv_bias=True, tie=True, n_kv=1, eps=1e-6)
    assert OPTIM and adamw_for  # reused through model_fixture


if __name__ == "__main__":
    main()
