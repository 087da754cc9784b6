"""Write the PyTorch reference fixtures for lmforge's Rust tests.

Run from the repository root:

    python3 tools/make_fixtures.py

Writes tests/fixtures/*.safetensors (layer fixtures: embedding, layernorm, linear,
attention, gelu, relu, mlp_gelu, mlp_relu, crossentropy, adamw; whole-model fixtures:
model_gpt2, model_course, model_bigram) and prints one line per file.  See
tests/fixtures/README.md for every tensor name, shape and convention.

Inputs are drawn from a fixed torch.Generator, rounded to float32, then promoted to
float64; all references (forward, torch.autograd backward, torch.optim.AdamW) are
computed in float64 and stored as float32 (integer tensors as int32).  The output is
deterministic (byte-identical across runs).
"""

import json
import math
import os
import struct
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

torch.set_num_threads(1)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from reference_gpt import (  # noqa: E402
    GPT,
    BigramLanguageModel,
    CourseGPT,
    course_config,
    course_to_hf,
    make_config,
)

OUT_DIR = os.path.join(os.path.dirname(HERE), "tests", "fixtures")

B, T, C, NH, V, OC = 2, 5, 12, 3, 11, 7
HS = C // NH

OPTIM = dict(lr=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1)


class Rng:
    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)

    def randn(self, *shape, scale=1.0, mean=0.0):
        """float32-representable values, returned as float64."""
        x = torch.randn(*shape, generator=self.g, dtype=torch.float32) * scale + mean
        return x.double()

    def randint(self, high, *shape):
        return torch.randint(0, high, shape, generator=self.g, dtype=torch.int64)

    def away_from_zero(self, *shape, scale=1.0, gap=0.02):
        x = torch.randn(*shape, generator=self.g, dtype=torch.float32) * scale
        s = torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))
        x = torch.where(x.abs() < gap, x + s * 4 * gap, x)
        assert x.abs().min() > 1e-3
        return x.double()


def store(name, tensors, metadata=None):
    out = {}
    for k, v in tensors.items():
        v = v.detach()
        if v.is_floating_point():
            v = v.to(torch.float32)
        else:
            v = v.to(torch.int32)
        out[k] = v.contiguous()
    path = os.path.join(OUT_DIR, name)
    md = {k: str(v) for k, v in (metadata or {}).items()}
    write_safetensors(path, out, md)
    # round-trip through the official reader
    back = load_file(path)
    assert set(back) == set(out) and all(torch.equal(back[k], out[k]) for k in out)
    print(f"wrote {os.path.relpath(path)} ({os.path.getsize(path)} bytes, {len(out)} tensors)")


def write_safetensors(path, tensors, metadata):
    """Deterministic safetensors writer.  (safetensors.torch.save_file keeps metadata in a
    hash map, so its header order -- and the file bytes -- vary between runs when there is
    more than one metadata key.)  Header: __metadata__ first, then tensors sorted by name,
    data laid out in that order; header padded with spaces to a multiple of 8 bytes."""
    dtypes = {torch.float32: "F32", torch.int32: "I32"}
    header = {"__metadata__": dict(sorted(metadata.items()))} if metadata else {}
    blobs, off = [], 0
    for k in sorted(tensors):
        v = tensors[k]
        b = v.contiguous().numpy().astype(v.numpy().dtype.newbyteorder("<"), copy=False).tobytes()
        header[k] = {"dtype": dtypes[v.dtype], "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def leaf(x):
    return x.clone().requires_grad_(True)


# ---------------------------------------------------------------------------------------
# layer fixtures
# ---------------------------------------------------------------------------------------


def fx_embedding():
    r = Rng(1)
    idx = r.randint(V, B, T)
    idx[1, 3] = idx[0, 1]  # guaranteed repeats (also within a row)
    idx[0, 4] = idx[0, 1]
    wte, wpe = leaf(r.randn(V, C, scale=0.5)), leaf(r.randn(T, C, scale=0.5))
    dout = r.randn(B, T, C)
    out = wte[idx] + wpe[torch.arange(T)]
    (out * dout).sum().backward()
    store("embedding.safetensors", dict(idx=idx, wte=wte, wpe=wpe, dout=dout, out=out,
                                        dwte=wte.grad, dwpe=wpe.grad))


def fx_layernorm():
    r = Rng(2)
    x = leaf(r.randn(B, T, C, scale=2.0, mean=0.5))
    w = leaf(r.randn(C, scale=0.2, mean=1.0))
    b = leaf(r.randn(C, scale=0.2))
    dout = r.randn(B, T, C)
    out = F.layer_norm(x, (C,), w, b, eps=1e-5)
    (out * dout).sum().backward()
    store("layernorm.safetensors", dict(x=x, weight=w, bias=b, dout=dout, out=out,
                                        dx=x.grad, dweight=w.grad, dbias=b.grad),
          {"eps": "1e-5"})


def fx_linear():
    r = Rng(3)
    x = leaf(r.randn(B, T, C, mean=0.3))
    w = leaf(r.randn(C, OC, scale=1.0 / math.sqrt(C)))
    b = leaf(r.randn(OC, scale=0.5))
    dout = r.randn(B, T, OC)
    out = x @ w + b
    (out * dout).sum().backward()
    store("linear.safetensors", dict(x=x, weight=w, bias=b, dout=dout, out=out,
                                     dx=x.grad, dweight=w.grad, dbias=b.grad))


def fx_lora():
    """A frozen linear layer with LoRA adapters, computed the way PEFT does:
    the low-rank path beside the frozen product, never a merged weight."""
    r = Rng(21)
    rank, alpha = 3, 6.0
    x = leaf(r.randn(B, T, C, mean=0.3))
    w = r.randn(C, OC, scale=1.0 / math.sqrt(C))
    b = r.randn(OC, scale=0.5)
    lora_a = leaf(r.randn(rank, C, scale=0.5))
    lora_b = leaf(r.randn(OC, rank, scale=0.5))
    dout = r.randn(B, T, OC)
    out = x @ w + b + (x @ lora_a.T @ lora_b.T) * (alpha / rank)
    (out * dout).sum().backward()
    store("lora.safetensors", dict(x=x, weight=w, bias=b, lora_A=lora_a, lora_B=lora_b, dout=dout,
                                   out=out, dx=x.grad, dlora_A=lora_a.grad, dlora_B=lora_b.grad),
          {"rank": rank, "alpha": alpha})


def attention_ref(qkv, n_head):
    Bq, Tq, C3 = qkv.shape
    Cq = C3 // 3
    hs = Cq // n_head
    q, k, v = qkv.split(Cq, dim=2)
    q = q.view(Bq, Tq, n_head, hs).transpose(1, 2)  # (B, NH, T, hs)
    k = k.view(Bq, Tq, n_head, hs).transpose(1, 2)
    v = v.view(Bq, Tq, n_head, hs).transpose(1, 2)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))  # (B, NH, T, T)
    causal = torch.ones(Tq, Tq, dtype=torch.bool).tril()
    att = att.masked_fill(~causal, float("-inf"))
    att = torch.softmax(att, dim=-1)
    y = att @ v  # (B, NH, T, hs)
    return y.transpose(1, 2).contiguous().view(Bq, Tq, Cq)


def fx_attention():
    r = Rng(4)
    qkv = leaf(r.randn(B, T, 3 * C, scale=1.5, mean=0.1))
    dout = r.randn(B, T, C)
    out = attention_ref(qkv, NH)
    (out * dout).sum().backward()
    store("attention.safetensors", dict(qkv=qkv, dout=dout, out=out, dqkv=qkv.grad),
          {"n_head": str(NH)})


def fx_activation(name, fn, seed):
    r = Rng(seed)
    x = leaf(r.away_from_zero(B, T, 4 * C, scale=2.0))
    dout = r.randn(B, T, 4 * C)
    out = fn(x)
    (out * dout).sum().backward()
    store(f"{name}.safetensors", dict(x=x, dout=dout, out=out, dx=x.grad))


def gelu_tanh(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def fx_mlp(act, seed):
    r = Rng(seed)
    x = leaf(r.randn(B, T, C, mean=0.2))
    fc_w = leaf(r.randn(C, 4 * C, scale=1.0 / math.sqrt(C)))
    fc_b = leaf(r.randn(4 * C, scale=0.3))
    pr_w = leaf(r.randn(4 * C, C, scale=1.0 / math.sqrt(4 * C)))
    pr_b = leaf(r.randn(C, scale=0.3))
    dout = r.randn(B, T, C)
    h = x @ fc_w + fc_b
    h = F.gelu(h, approximate="tanh") if act == "gelu" else F.relu(h)
    out = h @ pr_w + pr_b
    (out * dout).sum().backward()
    store(f"mlp_{act}.safetensors", {
        "x": x, "c_fc.weight": fc_w, "c_fc.bias": fc_b, "c_proj.weight": pr_w,
        "c_proj.bias": pr_b, "dout": dout, "out": out, "dx": x.grad,
        "grad.c_fc.weight": fc_w.grad, "grad.c_fc.bias": fc_b.grad,
        "grad.c_proj.weight": pr_w.grad, "grad.c_proj.bias": pr_b.grad,
    }, {"activation": act})


def fx_crossentropy():
    r = Rng(7)
    logits = leaf(r.randn(B, T, V, scale=3.0))
    targets = r.randint(V, B, T)
    probs = torch.softmax(logits, dim=-1)
    loss = F.cross_entropy(logits.view(-1, V), targets.view(-1))
    loss.backward()
    store("crossentropy.safetensors", dict(logits=logits, targets=targets, probs=probs,
                                           loss=loss.reshape(1), dlogits=logits.grad))


def fx_adamw():
    r = Rng(8)
    w = r.randn(4, 6, scale=0.5)
    b = r.randn(6, scale=0.5)
    grads = [(r.randn(4, 6, scale=s), r.randn(6, scale=s2)) for s, s2 in ((1.0, 0.1), (0.01, 2.0), (3.0, 0.5))]
    pw, pb = leaf(w), leaf(b)
    opt = torch.optim.AdamW(
        [{"params": [pw], "weight_decay": OPTIM["weight_decay"]}, {"params": [pb], "weight_decay": 0.0}],
        lr=OPTIM["lr"], betas=(OPTIM["beta1"], OPTIM["beta2"]), eps=OPTIM["eps"],
    )
    t = {"w": w, "b": b}
    for i, (gw, gb) in enumerate(grads, start=1):
        pw.grad, pb.grad = gw.clone(), gb.clone()
        opt.step()
        t[f"g{i}.w"], t[f"g{i}.b"] = gw, gb
        t[f"w{i}"], t[f"b{i}"] = pw.detach().clone(), pb.detach().clone()
    md = {k: repr(v) for k, v in OPTIM.items()}
    md["weight_decay_b"] = "0.0"
    store("adamw.safetensors", t, md)


# ---------------------------------------------------------------------------------------
# whole-model fixtures
# ---------------------------------------------------------------------------------------

MB, MT, BLOCK, MV, NLAYER, MNH, MC = 2, 6, 8, 11, 2, 3, 12


@torch.no_grad()
def randomize_(model, r, linear_layout):
    """Non-trivial random parameters (in named_parameters order).
    linear_layout: "conv1d" (weight is (in, out)) or "linear" (weight is (out, in))."""
    for name, p in model.named_parameters():
        if name.split(".")[-2].startswith("ln"):
            if name.endswith("weight"):
                p.copy_(r.randn(*p.shape, scale=0.1, mean=1.0))
            else:
                p.copy_(r.randn(*p.shape, scale=0.1))
        elif "wte" in name or "wpe" in name or "embedding_table" in name:
            p.copy_(r.randn(*p.shape, scale=0.5))
        elif name.endswith("bias"):
            p.copy_(r.randn(*p.shape, scale=0.1))
        else:
            fan_in = p.shape[0] if (linear_layout == "conv1d" and "lm_head" not in name) else p.shape[1]
            scale = 1.0 if ("c_attn" in name or "query" in name or "key" in name) else 0.6
            p.copy_(r.randn(*p.shape, scale=scale / math.sqrt(fan_in)))


def adamw_for(model):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": OPTIM["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=OPTIM["lr"], betas=(OPTIM["beta1"], OPTIM["beta2"]), eps=OPTIM["eps"],
    )


def model_fixture(fname, model, cfg, idx, targets, extra_check=None):
    """model: a GPT (HF names) in float64 with its random parameters set."""
    t = {}
    names = [n for n, _ in model.named_parameters()]
    for n, p in model.named_parameters():
        t[n] = p.detach().clone()
    t["idx"], t["targets"] = idx, targets
    logits, loss = model(idx, targets)
    model.zero_grad()
    loss.backward()
    t["logits"], t["loss"] = logits, loss.reshape(1)
    for n, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().max() > 1e-6, n
        t["grad." + n] = p.grad.detach().clone()
    if extra_check is not None:
        extra_check({n: p.grad for n, p in model.named_parameters()}, logits, loss)

    opt = adamw_for(model)
    params = list(model.parameters())
    losses, norms = [], []
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        _, loss = model(idx, targets)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        losses.append(loss.detach())
        norms.append(norm.detach())
        opt.step()
    t["losses"] = torch.stack(losses)
    t["grad_norms"] = torch.stack(norms)
    for n, p in model.named_parameters():
        t["step3." + n] = p.detach().clone()
    assert len(names) == len(set(names))
    optim_md = dict(OPTIM, grad_clip=1.0)
    store(fname, t, {"config": json.dumps(cfg, sort_keys=True), "optim": json.dumps(optim_md, sort_keys=True)})


def model_batch(seed):
    r = Rng(seed)
    return r, r.randint(MV, MB, MT), r.randint(MV, MB, MT)


def fx_model_gpt2():
    r, idx, targets = model_batch(10)
    cfg = make_config(vocab_size=MV, block_size=BLOCK, n_layer=NLAYER, n_head=MNH, n_embd=MC, dropout=0.0,
                      norm="pre", activation="gelu", tie_embeddings=True, bias=True, qkv_bias=True,
                      lm_head_bias=False)
    model = GPT(cfg).double()
    randomize_(model, r, "conv1d")
    model_fixture("model_gpt2.safetensors", model, cfg, idx, targets)


def fx_model_course():
    r, idx, targets = model_batch(11)
    course = CourseGPT(MV, MC, MNH, NLAYER, BLOCK, dropout=0.0).double()
    randomize_(course, r, "linear")
    cfg = course_config(MV, BLOCK, NLAYER, MNH, MC, dropout=0.0)
    model = GPT(cfg).double()
    hf = course_to_hf(course.state_dict())
    model.load_state_dict(hf, strict=True)

    # course model reference (its own forward / backward)
    c_logits, c_loss = course(idx, targets)
    course.zero_grad()
    c_loss.backward()
    c_grads = course_to_hf({n: p.grad for n, p in course.named_parameters()})

    def check(grads, logits, loss):
        d = (logits - c_logits.view_as(logits)).abs().max().item()
        assert d < 1e-12, f"course vs GPT logits differ by {d}"
        assert abs(loss.item() - c_loss.item()) < 1e-12
        assert set(grads) == set(c_grads), (set(grads) ^ set(c_grads))
        for n in grads:
            dg = (grads[n] - c_grads[n]).abs().max().item()
            assert dg < 1e-12, f"grad {n} differs by {dg}"

    model_fixture("model_course.safetensors", model, cfg, idx, targets, extra_check=check)


def fx_model_bigram():
    r, idx, targets = model_batch(12)
    m = BigramLanguageModel(MV).double()
    with torch.no_grad():
        m.token_embedding_table.weight.copy_(r.randn(MV, MV, scale=1.0))
    logits, loss = m(idx, targets)
    loss.backward()
    store("model_bigram.safetensors", {
        "token_embedding_table.weight": m.token_embedding_table.weight, "idx": idx, "targets": targets,
        "logits": logits, "loss": loss.reshape(1),
        "grad.token_embedding_table.weight": m.token_embedding_table.weight.grad,
    })


def main():
    torch.manual_seed(0)  # nothing should depend on the global RNG, but be safe
    os.makedirs(OUT_DIR, exist_ok=True)
    fx_embedding()
    fx_layernorm()
    fx_linear()
    fx_lora()
    fx_attention()
    fx_activation("gelu", gelu_tanh, 5)
    # sanity: explicit formula == F.gelu(approximate="tanh")
    z = torch.linspace(-6, 6, 101, dtype=torch.float64)
    assert (gelu_tanh(z) - F.gelu(z, approximate="tanh")).abs().max() < 1e-12
    fx_activation("relu", F.relu, 6)
    fx_mlp("gelu", 15)
    fx_mlp("relu", 16)
    fx_crossentropy()
    fx_adamw()
    fx_model_gpt2()
    fx_model_course()
    fx_model_bigram()
    total = sum(os.path.getsize(os.path.join(OUT_DIR, f)) for f in os.listdir(OUT_DIR) if f.endswith(".safetensors"))
    print(f"total {total} bytes")


if __name__ == "__main__":
    main()
