#!/usr/bin/env python3
"""Write inputs for running Karpathy's llm.c CPU trainer (train_gpt2.c) offline.

llm.c's `train_gpt2.c` expects, in its working directory:

  * gpt2_124M.bin  -- a model checkpoint: 256 int32 header
        [20240326 (magic), 3 (version), maxT, V, L, NH, C, padded V, 0...]
    followed by every parameter as float32, in this order and shape
    (matmul weights in (out, in) layout):
        wte (Vp, C), wpe (maxT, C),
        ln1w (L, C), ln1b (L, C), qkvw (L, 3C, C), qkvb (L, 3C),
        attprojw (L, C, C), attprojb (L, C), ln2w (L, C), ln2b (L, C),
        fcw (L, 4C, C), fcb (L, 4C), fcprojw (L, C, 4C), fcprojb (L, C),
        lnfw (C,), lnfb (C,)
  * dev/data/tinyshakespeare/tiny_shakespeare_{train,val}.bin -- token shards:
        256 int32 header [20240520 (magic), 1 (version), n_tokens, 0...]
        followed by n_tokens uint16 GPT-2 token ids.
  * gpt2_tokenizer.bin is optional (llm.c warns and prints token ids instead).

This script makes all of the above without network access:
  * a random-initialised GPT-2 124M checkpoint (seeded; weights N(0, 0.02),
    LayerNorm weights 1, biases 0; vocab 50257 padded to 50304, maxT 1024);
  * train/val shards from the tiny-shakespeare text, tokenised with tiktoken's
    GPT-2 (r50k_base) encoding built from lmforge's bundled ranks file.
    As in llm.c's own preprocessing, the first 32768 tokens are the val split.

Reproducing the llm.c vs lmforge step-time comparison (B=4, T=64, 2 threads):

    # llm.c sources (train_gpt2.c + llmc/{utils,tokenizer,dataloader,rand}.h)
    # copied to /tmp/llmc, outside this repository, then:
    cd /tmp/llmc && gcc -O3 -march=native -fopenmp -I. train_gpt2.c -lm -o train_gpt2
    python3 /work/main/bench/llmc_inputs.py /tmp/llmc
    cd /tmp/llmc && OMP_NUM_THREADS=2 ./train_gpt2   # prints "step N: ... (took X ms)"
    # lmforge, same shape:
    ./target/release/lmforge bench train --preset gpt2 --vocab 50257 --block 64 \
        --batch 4 --grad-accum 1 --threads 2 --steps 10 --warmup-steps 2

llm.c's per-step time covers forward + backward + AdamW update; its eval and
sampling passes are outside the timed region.

Usage: python3 bench/llmc_inputs.py OUT_DIR [--text PATH] [--seed N]
"""
import argparse
import base64
import gzip
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RANKS_GZ = os.path.join(REPO, "src", "tokenizer", "assets", "r50k_base.tiktoken.gz")
GPT2_PAT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

MODEL_MAGIC, MODEL_VERSION = 20240326, 3
DATA_MAGIC, DATA_VERSION = 20240520, 1
VAL_TOKENS = 32768


def gpt2_encoding():
    import tiktoken

    ranks = {}
    with gzip.open(RANKS_GZ, "rb") as f:
        for line in f:
            if line.strip():
                tok, rank = line.split()
                ranks[base64.b64decode(tok)] = int(rank)
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PAT,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 50256},
    )


def write_checkpoint(path, seed, max_t=1024, vocab=50257, padded_vocab=50304,
                     layers=12, heads=12, channels=768):
    rng = np.random.default_rng(seed)
    C, L = channels, layers

    def normal(*shape):
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)

    ones = lambda *s: np.ones(s, np.float32)
    zeros = lambda *s: np.zeros(s, np.float32)
    wte = normal(padded_vocab, C)
    wte[vocab:] = 0.0  # padding rows are never used as real tokens
    tensors = [
        wte, normal(max_t, C),
        ones(L, C), zeros(L, C), normal(L, 3 * C, C), zeros(L, 3 * C),
        normal(L, C, C), zeros(L, C), ones(L, C), zeros(L, C),
        normal(L, 4 * C, C), zeros(L, 4 * C), normal(L, C, 4 * C), zeros(L, C),
        ones(C), zeros(C),
    ]
    header = np.zeros(256, np.int32)
    header[:8] = [MODEL_MAGIC, MODEL_VERSION, max_t, vocab, L, heads, C, padded_vocab]
    with open(path, "wb") as f:
        f.write(header.tobytes())
        for t in tensors:
            f.write(np.ascontiguousarray(t, np.float32).tobytes())
    return sum(t.size for t in tensors)


def write_shard(path, tokens):
    toks = np.asarray(tokens, dtype=np.int64)
    assert toks.max() < 2**16
    header = np.zeros(256, np.int32)
    header[:3] = [DATA_MAGIC, DATA_VERSION, len(toks)]
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(toks.astype(np.uint16).tobytes())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--text", default="/work/shared/data/tinyshakespeare.txt")
    ap.add_argument("--seed", type=int, default=1337)
    args = ap.parse_args()

    os.makedirs(args.out_dir, exist_ok=True)
    n = write_checkpoint(os.path.join(args.out_dir, "gpt2_124M.bin"), args.seed)
    print(f"wrote gpt2_124M.bin ({n} parameters)")

    with open(args.text, encoding="utf-8") as f:
        text = f.read()
    tokens = gpt2_encoding().encode_ordinary(text)
    data_dir = os.path.join(args.out_dir, "dev", "data", "tinyshakespeare")
    os.makedirs(data_dir, exist_ok=True)
    write_shard(os.path.join(data_dir, "tiny_shakespeare_val.bin"), tokens[:VAL_TOKENS])
    write_shard(os.path.join(data_dir, "tiny_shakespeare_train.bin"), tokens[VAL_TOKENS:])
    print(f"wrote {len(tokens)} tokens ({VAL_TOKENS} val) to {data_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
