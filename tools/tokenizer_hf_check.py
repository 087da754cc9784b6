#!/usr/bin/env python3
"""Check that tokenizers trained by lmforge give the same ids in Python.

Trains a GPT-2-pattern and a GPT-4-pattern byte-level BPE with
`lmforge tokenizer train`, then encodes tinyshakespeare and the adversarial
strings of tools/tokenizer_fixtures.py three ways and compares the ids:
  - `lmforge tokenizer encode --tokenizer tok.json`
  - Hugging Face `tokenizers.Tokenizer.from_file("tok.json")`
  - tiktoken built from the `tok.tiktoken` ranks written beside it (ordinary
    text only: the rank file has no specials)
Then the other way round: a byte-level BPE trained and saved by Hugging Face
`tokenizers` (GPT-2 style: ByteLevel pre-tokenizer, no prefix space) is encoded
by `lmforge --tokenizer hf.json` and by Hugging Face.
Exits 1 on any mismatch.

    cargo build --release && python3 tools/tokenizer_hf_check.py
"""
import argparse
import base64
import subprocess
import sys
import tempfile
from pathlib import Path

import tiktoken
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tokenizer_fixtures import ADVERSARIAL, random_strings  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PATTERNS = {
    "gpt2": r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s""",
    "gpt4": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+""",
}


def lmforge_encode(exe, tok, text, tmp):
    path = Path(tmp) / "text.txt"
    path.write_bytes(text.encode("utf-8"))
    out = subprocess.run([exe, "tokenizer", "encode", "--tokenizer", str(tok), str(path)],
                         check=True, capture_output=True)
    return [int(x) for x in out.stdout.split()]


def train_with_hf(corpus, vocab_size, out):
    from tokenizers import decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train([corpus], trainer)
    tok.save(str(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lmforge", default=str(ROOT / "target/release/lmforge"))
    ap.add_argument("--corpus", default="/work/shared/data/tinyshakespeare.txt")
    ap.add_argument("--vocab-size", type=int, default=2000)
    args = ap.parse_args()

    corpus = Path(args.corpus).read_text()
    texts = [corpus[:50_000]] + ADVERSARIAL + random_strings(100, seed=99)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for pattern, regex in PATTERNS.items():
            tok_path = Path(tmp) / f"{pattern}.json"
            subprocess.run([args.lmforge, "tokenizer", "train", "--vocab-size", str(args.vocab_size),
                            "--pattern", pattern, "--special", "<|endoftext|>", "--out", str(tok_path),
                            args.corpus], check=True)
            hf = Tokenizer.from_file(str(tok_path))
            ranks = {}
            for line in tok_path.with_suffix(".tiktoken").read_text().splitlines():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
            tt = tiktoken.Encoding(name=f"lmforge-{pattern}", pat_str=regex, mergeable_ranks=ranks,
                                   special_tokens={"<|endoftext|>": len(ranks)})
            for i, text in enumerate(texts):
                ours = lmforge_encode(args.lmforge, tok_path, text, tmp)
                theirs = hf.encode(text).ids
                tiktoken_ids = tt.encode(text, allowed_special="all")
                if ours != theirs or ours != tiktoken_ids:
                    failures += 1
                    print(f"MISMATCH {pattern} text {i} {text[:40]!r}:\n  lmforge {ours[:20]}\n"
                          f"  hf      {theirs[:20]}\n  tiktoken {tiktoken_ids[:20]}")
                if hf.decode(theirs, skip_special_tokens=False) != text:
                    print(f"note: HF decode differs on text {i} {text[:40]!r}")
            print(f"{pattern}: {len(texts)} texts compared, vocabulary {hf.get_vocab_size()}")
        hf_path = Path(tmp) / "hf.json"
        train_with_hf(args.corpus, args.vocab_size, hf_path)
        hf = Tokenizer.from_file(str(hf_path))
        for i, text in enumerate(texts):
            ours = lmforge_encode(args.lmforge, hf_path, text, tmp)
            if ours != hf.encode(text).ids:
                failures += 1
                print(f"MISMATCH HF-trained text {i} {text[:40]!r}")
        print(f"HF-trained tokenizer.json: {len(texts)} texts compared")
    print("OK: lmforge, Hugging Face and tiktoken agree" if failures == 0 else f"{failures} mismatches")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
