"""Make the tiny Hugging Face GPT-2 folders that tests/hf.rs imports.

    python3 tools/make_hf_fixture.py        (needs torch, transformers, safetensors)

Writes tests/fixtures/hf_gpt2/:
  single/        config.json, model.safetensors (F32), tokenizer.json
                 -- what GPT2LMHeadModel.save_pretrained writes
  sharded_f16/   config.json, model-0000k-of-0000n.safetensors (F16) with
                 model.safetensors.index.json, vocab.json + merges.txt
                 -- the sharded, half-precision, legacy-tokenizer variant
  expected.safetensors
                 ids (I32, 1x12); logits_f32 (12, V) of the single model and
                 logits_f16 (12, V) of the half-precision weights (computed in
                 float64 from the same rounded weights lmforge widens to f32);
                 both from transformers' own GPT2LMHeadModel, attn_implementation="sdpa".

The model is random (seeded), with the 400-token BPE of
tests/fixtures/tokenizer/hf_bpe_tokenizer.json. Nothing is downloaded.
"""
import json
import pathlib
import shutil

import torch
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "hf_gpt2"
TOKENIZER = ROOT / "tests" / "fixtures" / "tokenizer" / "hf_bpe_tokenizer.json"


def model(dtype):
    torch.manual_seed(1234)
    config = GPT2Config(vocab_size=400, n_positions=16, n_embd=32, n_layer=2, n_head=4,
                        initializer_range=0.2, bos_token_id=0, eos_token_id=0,
                        attn_implementation="sdpa")
    m = GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # non-trivial layer norms and biases
        for name, p in m.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.add_(torch.randn_like(p) * 0.1)
    return m.to(dtype)


def logits(m, ids):
    m64 = m.to(torch.float64)
    with torch.no_grad():
        return m64(torch.tensor([ids])).logits[0].to(torch.float32)


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    ids = [5, 17, 399, 0, 42, 42, 123, 7, 250, 3, 88, 301]
    single = model(torch.float32)
    single.save_pretrained(OUT / "single", safe_serialization=True)
    shutil.copy(TOKENIZER, OUT / "single" / "tokenizer.json")
    half = model(torch.float16)
    half.save_pretrained(OUT / "sharded_f16", safe_serialization=True, max_shard_size="40KB")
    tok = json.loads(TOKENIZER.read_text())
    vocab = dict(tok["model"]["vocab"])
    for added in tok["added_tokens"]:
        vocab[added["content"]] = added["id"]
    (OUT / "sharded_f16" / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    (OUT / "sharded_f16" / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    expected = {
        "ids": torch.tensor([ids], dtype=torch.int32),
        "logits_f32": logits(single, ids),
        "logits_f16": logits(half, ids),
    }
    save_file(expected, OUT / "expected.safetensors")
    for f in sorted(OUT.rglob("*")):
        if f.is_file():
            print(f.relative_to(ROOT), f.stat().st_size)


if __name__ == "__main__":
    main()
