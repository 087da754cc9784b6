#!/usr/bin/env python3
"""Generate an OpenWebText-shaped corpus for benchmarking `lmforge prepare`.

The layout is OpenWebText's: one tar holding `openwebtext/urlsf_subsetNN-M_data.xz`
files, each an xz-compressed tar of `.txt` documents. The text is pieces of
Tiny Shakespeare mixed with synthetic words (so the character set is realistic
and documents differ). Nothing generated here is committed.

    python3 bench/make_corpus.py --size-mb 100 --out /tmp/owt100.tar
"""

import argparse
import io
import lzma
import random
import tarfile
from pathlib import Path


def documents(base: str, rng: random.Random, words: list[str]):
    """Endless documents: a slice of `base`, then a synthetic paragraph."""
    while True:
        n = rng.randint(500, 6000)
        start = rng.randrange(0, len(base) - n)
        synthetic = " ".join(rng.choice(words) for _ in range(rng.randint(20, 200)))
        yield base[start : start + n] + "\n\n" + synthetic.capitalize() + ".\n"


def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="the .tar to write")
    p.add_argument("--size-mb", type=float, default=100, help="uncompressed text, MB")
    p.add_argument("--docs-per-subset", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--text",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "shared/data/tinyshakespeare.txt",
        help="base text (default: the shared Tiny Shakespeare)",
    )
    args = p.parse_args()
    rng = random.Random(args.seed)
    base = args.text.read_text(encoding="utf-8")
    letters = "abcdefghijklmnopqrstuvwxyzéü"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(1, 10))) for _ in range(5000)]
    docs = documents(base, rng, words)
    target = int(args.size_mb * 1e6)
    written = subset = 0
    with tarfile.open(args.out, "w") as outer:
        while written < target:
            inner_buf = io.BytesIO()
            with tarfile.open(fileobj=inner_buf, mode="w") as inner:
                for i in range(args.docs_per_subset):
                    data = next(docs).encode("utf-8")
                    add(inner, f"{subset:07d}-{i}.txt", data)
                    written += len(data)
                    if written >= target:
                        break
            xz = lzma.compress(inner_buf.getvalue(), preset=0)
            add(outer, f"openwebtext/urlsf_subset{subset // 100:02d}-{subset % 100}_data.xz", xz)
            subset += 1
    print(f"{args.out}: {written / 1e6:.1f} MB of text in {subset} xz subsets")


if __name__ == "__main__":
    main()
