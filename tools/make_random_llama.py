"""Write a random-weight Hugging Face Llama folder of a given shape, for memory and speed
measurements (bench/lora_memory.sh). Nothing is downloaded; nothing it writes is committed.

    /root/bench-venv/bin/python tools/make_random_llama.py OUT_DIR [--shape tinyllama]

Shapes:
  tinyllama  TinyLlama-1.1B's: hidden 2048, 22 layers, 32 heads over 4 key/value heads,
             intermediate 5632, vocab 32000, context 2048 (1.1B parameters, 4.4 GB in F32)
  tiny       hidden 64, 2 layers, 4 heads over 2, intermediate 96, vocab 400 (a quick check)

The folder is what `save_pretrained` writes (F32, safetensors, sharded at 2 GB) plus the 400-token
byte-level BPE of tests/fixtures/tokenizer/hf_bpe_tokenizer.json as tokenizer.json (its ids are a
subset of the vocabulary; the weights are random, so which tokenizer does not matter).
"""
import argparse
import pathlib
import shutil

import torch
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOKENIZER = ROOT / "tests" / "fixtures" / "tokenizer" / "hf_bpe_tokenizer.json"
SHAPES = {
    "tinyllama": dict(hidden_size=2048, num_hidden_layers=22, num_attention_heads=32,
                      num_key_value_heads=4, intermediate_size=5632, vocab_size=32000,
                      max_position_embeddings=2048),
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=96, vocab_size=400, max_position_embeddings=128),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=pathlib.Path)
    ap.add_argument("--shape", choices=SHAPES, default="tinyllama")
    args = ap.parse_args()
    torch.manual_seed(0)
    config = LlamaConfig(**SHAPES[args.shape], rms_norm_eps=1e-5, tie_word_embeddings=False,
                         bos_token_id=0, eos_token_id=0,
                         rope_parameters=dict(rope_type="default", rope_theta=10000.0))
    model = LlamaForCausalLM(config)  # transformers' own random init (normal, std 0.02)
    model.save_pretrained(args.out, safe_serialization=True, max_shard_size="2GB")
    shutil.copy(TOKENIZER, args.out / "tokenizer.json")
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters in {args.out}")


if __name__ == "__main__":
    main()
