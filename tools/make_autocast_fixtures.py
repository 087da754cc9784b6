"""Write tests/fixtures/autocast.safetensors: PyTorch's bfloat16 autocast on the
inputs of the float64 fixtures, for lmforge's `--dtype bf16` (tests/pytorch_fixtures.rs).

Run from the repository root, after tools/make_fixtures.py and tools/make_llama_fixtures.py:

    python3 tools/make_autocast_fixtures.py

Each case takes the inputs and parameters of an existing fixture (rounded to float32,
as stored), runs forward and backward in float32 under
`torch.autocast("cpu", dtype=torch.bfloat16)` (products take bf16 operands, sum in
f32 and round their result to bf16; norms, softmax and the loss run in f32) and
stores the results widened to float32:

- `linear.{out,dx,dweight,dbias}`: linear.safetensors' layer, `out = x @ weight + bias`,
  gradients of `sum(out * dout)`;
- `gpt2.{logits,loss}`, `gpt2.grad.<name>`: model_gpt2.safetensors' model and batch,
  gradients of the mean loss;
- `llama.{logits,loss}`, `llama.grad.<name>`: model_llama.safetensors' (transformers'
  LlamaForCausalLM, eager attention).

Deterministic (one thread; byte-identical across runs).
"""

import json
import os
import sys

import torch
from safetensors.torch import load_file

torch.set_num_threads(1)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_fixtures import OUT_DIR, store  # noqa: E402
from make_llama_fixtures import ROPE, CausalLM  # noqa: E402
from reference_gpt import GPT  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402


def fixture(name):
    return load_file(os.path.join(OUT_DIR, name))


def autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def linear_case():
    fx = fixture("linear.safetensors")
    x, w, b = (fx[k].clone().requires_grad_(True) for k in ("x", "weight", "bias"))
    with autocast():
        out = x @ w + b
    (out.float() * fx["dout"]).sum().backward()
    return {"linear.out": out, "linear.dx": x.grad, "linear.dweight": w.grad, "linear.dbias": b.grad}


def model_case(prefix, fx, model):
    """Load `fx`'s parameters into `model` (float32), run its batch under autocast."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(fx[name])
    with autocast():
        logits, loss = model(fx["idx"].long(), fx["targets"].long())
    loss.backward()
    out = {f"{prefix}.logits": logits, f"{prefix}.loss": loss.reshape(1)}
    for name, p in params.items():
        out[f"{prefix}.grad.{name}"] = p.grad
    return out


def gpt2_case():
    fx = fixture("model_gpt2.safetensors")
    with open(os.path.join(OUT_DIR, "model_gpt2.safetensors"), "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    cfg = json.loads(header["__metadata__"]["config"])
    return model_case("gpt2", fx, GPT(cfg).float())


def llama_case():
    """model_llama.safetensors' model, configured as make_llama_fixtures.fx_model does."""
    fx = fixture("model_llama.safetensors")
    hf_cfg = LlamaConfig(vocab_size=13, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8,
                         rms_norm_eps=1e-5, tie_word_embeddings=False, rope_parameters=dict(ROPE["llama3"]),
                         attention_dropout=0.0, attn_implementation="eager")
    hf_cfg.attention_bias = False
    return model_case("llama", fx, CausalLM(LlamaForCausalLM(hf_cfg).float().eval()))


def main():
    tensors = {**linear_case(), **gpt2_case(), **llama_case()}
    store("autocast.safetensors", tensors, {"autocast": "cpu bfloat16", "torch": torch.__version__})


if __name__ == "__main__":
    main()
