"""Make the tiny Hugging Face Llama-family folders that tests/hf_llama.rs imports.

    /root/bench-venv/bin/python tools/make_hf_llama_fixture.py   (torch, transformers, safetensors)

Writes tests/fixtures/hf_llama/, one folder per model_type, each what `save_pretrained` writes
plus the 400-token BPE of tests/fixtures/tokenizer/hf_bpe_tokenizer.json as tokenizer.json:
  llama/         LlamaForCausalLM, F32, one file: 4 query heads over 2 key/value heads,
                 untied head, llama3 rope scaling
  qwen2_bf16/    Qwen2ForCausalLM, BF16, sharded (model.safetensors.index.json): q/k/v biases,
                 tied head, one key/value head
  mistral_f16/   MistralForCausalLM, F16, one file: sliding_window 24 (the context lmforge keeps)
  expected.safetensors
                 ids (I32, 1x10); for each folder NAME: logits_NAME (10, V) computed in float64
                 from the weights as stored (half precision widened exactly), and greedy_NAME
                 (I32, 1x8): transformers' generate(do_sample=False) with its cache, 8 new tokens.
The models are random (seeded); nothing is downloaded.
"""
import copy
import pathlib
import shutil

import torch
from safetensors.torch import save_file
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM,
                          Qwen2Config, Qwen2ForCausalLM)

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "hf_llama"
TOKENIZER = ROOT / "tests" / "fixtures" / "tokenizer" / "hf_bpe_tokenizer.json"
IDS = [5, 17, 399, 0, 42, 42, 123, 7, 250, 3]

SHAPE = dict(vocab_size=400, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
             num_attention_heads=4, max_position_embeddings=32, bos_token_id=0, eos_token_id=0,
             attn_implementation="eager")
MODELS = {
    "llama": (LlamaForCausalLM, LlamaConfig(
        **SHAPE, num_key_value_heads=2, rms_norm_eps=1e-5, tie_word_embeddings=False,
        rope_parameters=dict(rope_type="llama3", rope_theta=50.0, factor=4.0, low_freq_factor=1.0,
                             high_freq_factor=4.0, original_max_position_embeddings=16)),
        torch.float32, None),
    "qwen2_bf16": (Qwen2ForCausalLM, Qwen2Config(
        **SHAPE, num_key_value_heads=1, rms_norm_eps=1e-6, tie_word_embeddings=True,
        rope_parameters=dict(rope_type="default", rope_theta=1000.0)),
        torch.bfloat16, "20KB"),
    "mistral_f16": (MistralForCausalLM, MistralConfig(
        **SHAPE, num_key_value_heads=2, rms_norm_eps=1e-5, tie_word_embeddings=False, sliding_window=24,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0)),
        torch.float16, None),
}


def build(cls, config, seed):
    torch.manual_seed(seed)
    m = cls(config).eval()
    with torch.no_grad():  # weights large enough that every layer matters, norms not all 1
        for name, p in m.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.3 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
    return m


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    expected = {"ids": torch.tensor([IDS], dtype=torch.int32)}
    for seed, (name, (cls, config, dtype, shard)) in enumerate(MODELS.items()):
        m = build(cls, config, 4321 + seed)
        with torch.no_grad():  # the weights as they will be stored, still in float32
            for p in m.parameters():
                p.copy_(p.to(dtype).to(torch.float32))
        kwargs = {"max_shard_size": shard} if shard else {}
        copy.deepcopy(m).to(dtype).save_pretrained(OUT / name, safe_serialization=True, **kwargs)
        shutil.copy(TOKENIZER, OUT / name / "tokenizer.json")
        # The stored weights widened exactly; the rotary frequencies stay as computed in
        # float32 (converting the model to half precision would round those buffers too).
        m64 = m.to(torch.float64)
        with torch.no_grad():
            ids = torch.tensor([IDS])
            expected[f"logits_{name}"] = m64(ids).logits[0].to(torch.float32)
            # An explicit mask: otherwise generate masks the prompt's id 0 as padding.
            out = m64.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                               do_sample=False, use_cache=True,
                               pad_token_id=0, eos_token_id=None)
            expected[f"greedy_{name}"] = out[:, len(IDS):].to(torch.int32)
    save_file(expected, OUT / "expected.safetensors")
    for f in sorted(OUT.rglob("*")):
        if f.is_file():
            print(f.relative_to(ROOT), f.stat().st_size)


if __name__ == "__main__":
    main()
