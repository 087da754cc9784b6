"""Check a folder written by `lmforge export-hf` as a `transformers` user would.

    python3 tools/check_hf_export.py EXPORTED_DIR [--ids-from RUN_DIR]

Loads it with GPT2LMHeadModel.from_pretrained (no missing or unexpected
weights allowed) and AutoTokenizer.from_pretrained; when the tokenizer has a
chat template, renders a conversation with apply_chat_template and checks it
against lmforge's template (`<|role|>content<|end|>`, then `<|assistant|>`);
checks that `lmforge tokenizer encode` gives transformers' ids for a text.
Prints what it checked; exits non-zero on a mismatch.
"""
import argparse
import subprocess
import sys
import tempfile

import torch
from transformers import AutoTokenizer, GPT2LMHeadModel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--binary", default="target/release/lmforge")
    args = ap.parse_args()
    model, info = GPT2LMHeadModel.from_pretrained(args.folder, output_loading_info=True)
    bad = {k: v for k, v in info.items() if v and k != "mismatched_keys" or (k == "mismatched_keys" and v)}
    if bad:
        sys.exit(f"loading reported {bad}")
    tok = AutoTokenizer.from_pretrained(args.folder)
    print(f"loaded: {sum(p.numel() for p in model.parameters())} parameters, vocabulary {len(tok)}")
    text = "Hello there, general Kenobi.\nSecond line <|endoftext|> after."
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as f:
        f.write(text)
        f.flush()
        ours = subprocess.run([args.binary, "tokenizer", "encode", "--tokenizer",
                               f"{args.folder}/tokenizer.json", f.name],
                              capture_output=True, text=True, check=True).stdout.split()
    theirs = tok(text)["input_ids"]
    if [int(x) for x in ours] != theirs:
        sys.exit(f"token ids differ: lmforge {ours[:20]}..., transformers {theirs[:20]}...")
    print(f"tokenizer: the same {len(theirs)} ids as lmforge")
    if tok.chat_template:
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
        rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        expected = "<|system|>Be brief.<|end|><|user|>Hi!<|end|><|assistant|>"
        if rendered != expected:
            sys.exit(f"chat template renders {rendered!r}, lmforge {expected!r}")
        ids = tok.apply_chat_template(messages, add_generation_prompt=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        specials = [tok.convert_tokens_to_ids(t) for t in ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]]
        if not all(s in ids for s in specials[:3]):
            sys.exit(f"the template's special tokens are not single ids: {ids}")
        print(f"chat template: {rendered!r}, specials {specials}")
    with torch.no_grad():
        out = model.generate(torch.tensor([theirs[:5]]), max_new_tokens=5, do_sample=False)
    print(f"generate: ok ({out.shape[1]} tokens)")


if __name__ == "__main__":
    main()
