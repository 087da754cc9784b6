#!/usr/bin/env python3
"""Python reference for `lmforge prepare --tokenizer char` on an OpenWebText-shaped
tar (see make_corpus.py), in the course's style: decompress each .xz member,
read its tar of .txt documents, gather the character vocabulary in a first pass,
then encode with a dict into uint16 and write train/val files. One process.

    python3 bench/prepare_baseline.py /tmp/owt100.tar /tmp/baseline_out
"""

import io
import lzma
import random
import sys
import tarfile
import time
from pathlib import Path

import numpy as np


def documents(path: str):
    with tarfile.open(path) as outer:
        for member in outer:
            if not member.isfile():
                continue
            data = lzma.decompress(outer.extractfile(member).read())
            with tarfile.open(fileobj=io.BytesIO(data)) as inner:
                for doc in inner:
                    if doc.isfile():
                        yield inner.extractfile(doc).read().decode("utf-8")


def main() -> None:
    src, out = sys.argv[1], Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    chars = set()
    for doc in documents(src):
        chars.update(doc)
    vocab = sorted(chars)
    stoi = {c: i for i, c in enumerate(vocab)}
    eot = len(vocab)
    rng = random.Random(1337)
    n_tokens = 0
    with open(out / "train.bin", "wb") as train, open(out / "val.bin", "wb") as val:
        for doc in documents(src):
            ids = np.array([eot] + [stoi[c] for c in doc], dtype=np.uint16)
            (val if rng.random() < 0.1 else train).write(ids.tobytes())
            n_tokens += len(ids)
    seconds = time.time() - start
    print(f"python reference: {n_tokens} tokens, vocabulary {eot + 1}, {seconds:.1f} s")


if __name__ == "__main__":
    main()
