"""Check that an lmforge run directory loads in Hugging Face `transformers` and
`tokenizers` and gives the same text: greedy generation through
`GPT2LMHeadModel.from_pretrained(run)` must equal `lmforge sample --temperature 0`.

    python3 tools/check_transformers.py runs/shakespeare [--prompt "ROMEO:"] [--tokens 40]

Works for pre-norm GELU models (the char-* and gpt2 presets). Exits 1 on a mismatch.
"""

import argparse
import os
import subprocess
import sys

import torch
from tokenizers import Tokenizer
from transformers import GPT2LMHeadModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--prompt", default="ROMEO:")
    p.add_argument("--tokens", type=int, default=40)
    p.add_argument("--lmforge", default=os.path.join(ROOT, "target", "release", "lmforge"))
    a = p.parse_args()

    tok = Tokenizer.from_file(os.path.join(a.run, "tokenizer.json"))
    model = GPT2LMHeadModel.from_pretrained(a.run).eval()
    ids = tok.encode(a.prompt).ids
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=a.tokens, min_new_tokens=a.tokens,
                             do_sample=False, pad_token_id=0)
    theirs = tok.decode(out[0].tolist())
    ours = subprocess.run([a.lmforge, "sample", a.run, "--prompt", a.prompt, "--max-new-tokens", str(a.tokens),
                           "--temperature", "0"], capture_output=True, text=True, check=True).stdout
    ours = ours[:-1] if ours.endswith("\n") else ours  # the newline lmforge prints at the end
    print(f"transformers: {theirs!r}")
    print(f"lmforge:      {ours!r}")
    if theirs != ours:
        sys.exit("MISMATCH")
    print("identical")


if __name__ == "__main__":
    main()
