#!/usr/bin/env python3
"""Tokenizer benchmarks: lmforge against tiktoken (GPT-2 encoding) and against
the Hugging Face tokenizers trainer (byte-level BPE training), in one run on
the same machine, printing ratios.

    cargo build --release
    python3 bench/tokenizer_bench.py [--corpus-mb 100] [--encode-mb 20] [--threads 2]

Corpus: generated (seeded) text of Zipf-distributed made-up words with
punctuation, numbers, newlines and some non-ASCII, written under --workdir
(not committed). Encoding throughput is the time of the encode call alone
(lmforge reports it on stderr; tiktoken timed around encode_ordinary /
encode_ordinary_batch); training is wall time and peak memory (max RSS) of a
separate process each: `lmforge tokenizer train` and a Python process running
tokenizers' BpeTrainer with the same settings (GPT-2 split, ByteLevel alphabet).
Both trainers use all cores (rayon) by default.
"""
import argparse
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GPT2_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

TIKTOKEN_SETUP = f"""
import base64, gzip, time, tiktoken, sys
raw = gzip.decompress(open({str(ROOT / 'src/tokenizer/assets/r50k_base.tiktoken.gz')!r}, 'rb').read())
ranks = {{base64.b64decode(t): int(r) for t, r in (l.split() for l in raw.splitlines())}}
enc = tiktoken.Encoding(name='gpt2', pat_str={GPT2_PAT!r}, mergeable_ranks=ranks,
                        special_tokens={{'<|endoftext|>': 50256}})
"""


def generate_corpus(path, megabytes, seed=0):
    """Seeded synthetic text: Zipfian words from syllables, sentences, paragraphs."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "an", "er", "is", "on", "th", "qu",
                 "str", "ght", "é", "ü", "ß", "ñ", "ст", "ви", "中", "文"]
    vocab = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(50_000)]
    weights = [1.0 / (rank + 1) for rank in range(len(vocab))]
    target = megabytes * 1_000_000
    with open(path, "w", encoding="utf-8") as f:
        written = 0
        while written < target:
            words = rng.choices(vocab, weights, k=20_000)
            out = []
            for i, w in enumerate(words):
                r = rng.random()
                if r < 0.05:
                    w = w.capitalize()
                elif r < 0.07:
                    w = str(rng.randint(0, 10 ** rng.randint(1, 6)))
                out.append(w)
                r = rng.random()
                out.append(", " if r < 0.06 else ". " if r < 0.1 else ".\n\n" if r < 0.11
                           else "'s " if r < 0.12 else "\n" if r < 0.14 else " ")
            chunk = "".join(out)
            f.write(chunk)
            written += len(chunk.encode("utf-8"))


def run_rss(cmd, workdir):
    """Run a command; return (stdout bytes, stderr text, wall seconds, max RSS in MB).
    Output goes through files (waiting on a child that fills a pipe deadlocks);
    max RSS comes from GNU time, whose own small process forks the command
    (a child forked from this large Python process would inherit its peak)."""
    out_path, err_path = Path(workdir) / "stdout", Path(workdir) / "stderr"
    start = time.perf_counter()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        status = subprocess.run(["/usr/bin/time", "-f", "maxrss_kb=%M"] + cmd,
                                stdout=out, stderr=err).returncode
    wall = time.perf_counter() - start
    err = err_path.read_text(errors="replace")
    if status != 0:
        sys.exit(f"{cmd[:3]} failed:\n{err}")
    rss_kb = int(re.findall(r"maxrss_kb=(\d+)", err)[-1])
    return out_path.read_bytes(), err, wall, rss_kb / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lmforge", default=str(ROOT / "target/release/lmforge"))
    ap.add_argument("--workdir", default="/tmp/lmforge_tokenizer_bench")
    ap.add_argument("--corpus-mb", type=int, default=100)
    ap.add_argument("--encode-mb", type=int, default=20)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--vocab-sizes", type=int, nargs="+", default=[4096, 32768])
    ap.add_argument("--skip-train", action="store_true")
    args = ap.parse_args()

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / f"corpus_{args.corpus_mb}mb.txt"
    if not corpus.exists():
        print(f"generating {corpus} ...", flush=True)
        generate_corpus(corpus, args.corpus_mb)
    sample = work / f"encode_{args.encode_mb}mb.txt"
    with open(corpus, "rb") as f:
        data = f.read(args.encode_mb * 1_000_000)
    sample.write_bytes(data[: data.rfind(b"\n") + 1])
    print(f"machine: {os.cpu_count()} cores; corpus {corpus.stat().st_size / 1e6:.0f} MB; "
          f"encode sample {sample.stat().st_size / 1e6:.0f} MB")

    # --- GPT-2 encoding throughput ---
    print("\n== GPT-2 encoding (MB/s, encode call only; best of 3) ==")
    results = {}
    for threads in sorted({1, args.threads}):
        best, ids = 0.0, None
        for _ in range(3):
            out, err, _, _ = run_rss([args.lmforge, "tokenizer", "encode", "--tokenizer", "gpt2",
                                      "--threads", str(threads), str(sample)], work)
            best = max(best, float(re.search(r"([\d.]+) MB/s", err).group(1)))
            ids = out
        results[("lmforge", threads)] = best
        lmforge_ids = ids.split()
    for threads in sorted({1, args.threads}):
        code = TIKTOKEN_SETUP + f"""
text = open({str(sample)!r}, encoding='utf-8').read()
docs = text.split('\\n\\n')
docs = [d + '\\n\\n' for d in docs[:-1]] + [docs[-1]]
best = 0
for _ in range(3):
    t = time.perf_counter()
    if {threads} == 1:
        ids = enc.encode_ordinary(text)
        n = len(ids)
    else:
        n = sum(map(len, enc.encode_ordinary_batch(docs, num_threads={threads})))
    best = max(best, len(text.encode()) / 1e6 / (time.perf_counter() - t))
print(best, n)
if {threads} == 1:
    open({str(work / 'tiktoken_ids.txt')!r}, 'w').write(' '.join(map(str, ids)))
"""
        out, _, _, _ = run_rss([sys.executable, "-c", code], work)
        best, _ = out.split()
        results[("tiktoken", threads)] = float(best)
    for threads in sorted({1, args.threads}):
        ours, theirs = results[("lmforge", threads)], results[("tiktoken", threads)]
        how = "encode_ordinary" if threads == 1 else "encode_ordinary_batch over paragraphs"
        print(f"threads={threads}: lmforge {ours:6.1f} MB/s | tiktoken ({how}) {theirs:6.1f} MB/s"
              f" | ratio {ours / theirs:.2f}x")
    tiktoken_ids = (work / "tiktoken_ids.txt").read_bytes().split()
    print(f"ids: lmforge {len(lmforge_ids)} tokens, tiktoken {len(tiktoken_ids)} tokens: "
          f"{'identical' if lmforge_ids == tiktoken_ids else 'DIFFERENT'}")
    del lmforge_ids, tiktoken_ids
    print("(tiktoken's batch encodes paragraphs as separate documents, so its ids at\n"
          " paragraph ends differ; lmforge --threads cuts only where the ids cannot change)")

    if args.skip_train:
        return
    # --- BPE training ---
    print(f"\n== byte-level BPE training on {corpus.stat().st_size / 1e6:.0f} MB (wall s, max RSS MB) ==")
    for vocab in args.vocab_sizes:
        out_json = work / f"lmforge_{vocab}.json"
        _, err, ours, ours_rss = run_rss([args.lmforge, "tokenizer", "train", "--vocab-size", str(vocab),
                                          "--pattern", "gpt2", "--out", str(out_json), str(corpus)], work)
        code = f"""
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size={vocab}, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                              show_progress=False)
tok.train([{str(corpus)!r}], trainer)
tok.save({str(work / f'hf_{vocab}.json')!r})
"""
        _, _, theirs, theirs_rss = run_rss([sys.executable, "-c", code], work)
        print(f"vocab {vocab:6}: lmforge {ours:7.1f} s {ours_rss:7.0f} MB | HF tokenizers "
              f"{theirs:7.1f} s {theirs_rss:7.0f} MB | speed ratio {theirs / ours:.2f}x")


if __name__ == "__main__":
    main()
