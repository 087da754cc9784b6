"""Write tests/fixtures/model_llama_lora.safetensors: PEFT's LoRA on a tiny LlamaForCausalLM.

Run from the repository root:

    /root/bench-venv/bin/python tools/make_lora_llama_fixture.py   (torch, transformers, peft)

A random float64 LlamaForCausalLM (hidden 32, 2 layers, 4 query heads over 2 key/value heads,
untied head) wrapped by `peft.get_peft_model` with LoRA r=4, alpha=8 on q_proj, v_proj, o_proj,
up_proj and down_proj: q and v are two of the three parts of lmforge's fused c_attn (k is not
adapted), up is the second half of its fused [gate | up], o and down are whole layers. Both
adapter matrices are random (PEFT starts B at zero, which would leave A's gradient zero). The
fixture holds, as tests/pytorch_fixtures.rs's whole-model checks read them (conventions in
tests/fixtures/README.md):
  every base tensor under its Hugging Face name, and every adapter under lmforge's name
  (PEFT's without `base_model.model.` and `.default`): model.layers.{l}.self_attn.q_proj.lora_A.weight;
  idx, targets (2x6); logits, loss; grad.NAME for each adapter (the base is frozen: no gradients);
  losses, grad_norms, step3.NAME: three torch.optim.AdamW steps over the adapters only
  (weight decay on them, gradients clipped to norm 1), as lmforge trains a LoRA run.
"""

import json
import os
import sys

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_fixtures import OPTIM, Rng, store  # noqa: E402
from make_llama_fixtures import MB, MT, MV, ROPE, CausalLM, lmforge_config, randomize_llama_  # noqa: E402

torch.set_num_threads(1)

RANK, ALPHA = 4, 8.0
TARGETS = ["q_proj", "v_proj", "o_proj", "up_proj", "down_proj"]
PEFT_PREFIX = "base_model.model."


def lmforge_name(peft_name):
    return peft_name.removeprefix(PEFT_PREFIX).replace(".default", "")


def main():
    torch.manual_seed(0)
    r = Rng(120)
    idx, targets = r.randint(MV, MB, MT), r.randint(MV, MB, MT)
    hf_cfg = LlamaConfig(vocab_size=MV, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8,
                         rms_norm_eps=1e-5, tie_word_embeddings=False,
                         rope_parameters=dict(ROPE["llama3"]), attention_dropout=0.0,
                         attn_implementation="eager")
    hf = LlamaForCausalLM(hf_cfg).double().eval()
    randomize_llama_(hf, r)
    t = {n: p.detach().clone() for n, p in hf.named_parameters()}
    peft_cfg = LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, lora_dropout=0.0,
                          bias="none")
    model = CausalLM(get_peft_model(hf, peft_cfg).double())
    adapters = [(lmforge_name(n), p) for n, p in model.named_parameters() if p.requires_grad]
    assert adapters and all(".lora_" in n for n, _ in adapters)
    assert len(adapters) == 2 * len(TARGETS) * hf_cfg.num_hidden_layers
    with torch.no_grad():
        for name, p in adapters:
            p.copy_(r.randn(*p.shape, scale=0.3))
            t[name] = p.detach().clone()
    params = [p for _, p in adapters]

    logits, loss = model(idx, targets)
    loss.backward()
    t["idx"], t["targets"], t["logits"], t["loss"] = idx, targets, logits, loss.reshape(1)
    for name, p in adapters:
        assert p.grad is not None and p.grad.abs().max() > 1e-6, name
        t["grad." + name] = p.grad.detach().clone()

    opt = torch.optim.AdamW(params, lr=OPTIM["lr"], betas=(OPTIM["beta1"], OPTIM["beta2"]),
                            eps=OPTIM["eps"], weight_decay=OPTIM["weight_decay"])
    losses, norms = [], []
    for _ in range(3):
        opt.zero_grad(set_to_none=True)
        _, loss = model(idx, targets)
        loss.backward()
        norms.append(torch.nn.utils.clip_grad_norm_(params, 1.0).detach())
        losses.append(loss.detach())
        opt.step()
    t["losses"], t["grad_norms"] = torch.stack(losses), torch.stack(norms)
    for name, p in adapters:
        t["step3." + name] = p.detach().clone()

    cfg = lmforge_config(hf_cfg, ROPE["llama3"], qkv_bias=False, tie=False)
    cfg["lora"] = dict(rank=RANK, alpha=ALPHA, targets=TARGETS)
    store("model_llama_lora.safetensors", t,
          {"config": json.dumps(cfg, sort_keys=True),
           "optim": json.dumps(dict(OPTIM, grad_clip=1.0), sort_keys=True)})


if __name__ == "__main__":
    main()
