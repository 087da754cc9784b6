"""Check that PEFT loads a LoRA run's adapters as lmforge trained them (run by hand).

    /root/bench-venv/bin/python tools/check_lora_peft.py RUN_DIR PARENT_HF_DIR [--binary target/release/lmforge]

RUN_DIR is an `lmforge train --init-from PARENT_HF_DIR --lora-rank R` run of a Hugging Face
model (GPT-2 or Llama family). Loads PARENT_HF_DIR with AutoModelForCausalLM and the run's
adapter_model.safetensors + adapter_config.json with peft.PeftModel.from_pretrained (every
adapter must load: no missing or unexpected LoRA keys), then compares its logits (float64) with
those of `lmforge export-hf RUN_DIR` (the adapters merged by lmforge) loaded by transformers, on
a fixed sequence of token ids. Prints the largest difference; exits non-zero above 1e-4 of the
logit scale (lmforge merges in f32).
"""
import argparse
import subprocess
import sys
import tempfile

import torch
from peft import PeftModel
from safetensors import safe_open
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("parent")
    ap.add_argument("--binary", default="target/release/lmforge")
    args = ap.parse_args()
    base = AutoModelForCausalLM.from_pretrained(args.parent, torch_dtype=torch.float64).eval()
    vocab = base.config.vocab_size
    ids = torch.tensor([[(7 * i + 3) % vocab for i in range(12)]])
    with torch.no_grad():
        plain = base(input_ids=ids).logits
    peft = PeftModel.from_pretrained(base, args.run).eval()
    with safe_open(f"{args.run}/adapter_model.safetensors", "pt") as f:
        saved = set(f.keys())
    loaded = {n.replace(".default", "") for n, _ in peft.named_parameters() if ".lora_" in n}
    if saved != loaded:
        sys.exit(f"adapters not loaded: {sorted(saved - loaded)}; not in the file: {sorted(loaded - saved)}")
    b_norm = max(p.abs().max().item() for n, p in peft.named_parameters() if "lora_B" in n)
    if b_norm == 0.0:
        sys.exit("every lora_B is zero: train the run longer (or with a larger --lr) to check anything")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([args.binary, "export-hf", args.run, "--out", tmp], check=True)
        merged = AutoModelForCausalLM.from_pretrained(tmp, torch_dtype=torch.float64).eval()
        with torch.no_grad():
            want, got = peft(input_ids=ids).logits, merged(input_ids=ids).logits
    scale = want.abs().max().item()
    worst = (want - got).abs().max().item()
    print(f"{len(saved)} adapter tensors loaded by PEFT; max |lmforge merged - PEFT| = {worst:.3g} "
          f"(logit scale {scale:.3g}); largest |lora_B| {b_norm:.3g}")
    print(f"(the adapters move PEFT's logits by up to {(want - plain).abs().max().item():.3g})")
    if worst > 1e-4 * scale:
        sys.exit("lmforge's merged model and PEFT's adapted model disagree")


if __name__ == "__main__":
    main()
