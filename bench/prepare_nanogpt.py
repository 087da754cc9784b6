"""A nanoGPT-style `prepare.py` (as in nanoGPT's data/openwebtext/prepare.py) for
comparison with `lmforge prepare --tokenizer gpt2`: each JSON Lines document
is encoded with tiktoken's `gpt2` (`encode_ordinary` + `<|endoftext|>`) in a
multiprocessing pool, documents go to train or val by a seeded draw, and each
split is written as raw uint16 `train.bin` / `val.bin` (np.memmap).

    python3 bench/prepare_nanogpt.py docs.jsonl OUT_DIR --workers 2

The GPT-2 ranks are read offline from src/tokenizer/assets/r50k_base.tiktoken.gz.
Prints documents, tokens, seconds and MB/s.
"""

import argparse
import base64
import gzip
import json
import os
import random
import time
from multiprocessing import Pool

import numpy as np
import tiktoken

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
enc = None


def init():
    global enc
    path = os.path.join(ROOT, "src", "tokenizer", "assets", "r50k_base.tiktoken.gz")
    ranks = {base64.b64decode(t): int(r) for t, r in (line.split() for line in gzip.open(path) if line.strip())}
    enc = tiktoken.Encoding(name="gpt2", pat_str=PATTERN, mergeable_ranks=ranks,
                            special_tokens={"<|endoftext|>": 50256})


def process(line):
    ids = enc.encode_ordinary(json.loads(line)["text"])
    ids.append(enc.eot_token)
    return ids


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input")
    p.add_argument("out")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--val-fraction", type=float, default=0.1)
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    t0 = time.time()
    rng = random.Random(1337)
    splits = {"train": [], "val": []}
    docs = 0
    with open(a.input) as f, Pool(a.workers, initializer=init) as pool:
        for ids in pool.imap(process, f, chunksize=256):
            splits["val" if rng.random() < a.val_fraction else "train"].append(np.array(ids, dtype=np.uint16))
            docs += 1
    tokens = 0
    for name, parts in splits.items():
        arr = np.memmap(os.path.join(a.out, f"{name}.bin"), dtype=np.uint16, mode="w+",
                        shape=(sum(len(x) for x in parts),))
        at = 0
        for x in parts:
            arr[at:at + len(x)] = x
            at += len(x)
        arr.flush()
        tokens += at
    dt = time.time() - t0
    size = os.path.getsize(a.input)
    print(f"nanoGPT-style: {docs} documents, {tokens} tokens, {dt:.1f} s, {size / dt / 1e6:.1f} MB/s")


if __name__ == "__main__":
    main()
