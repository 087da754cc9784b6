#!/usr/bin/env python3
"""Write the GPT-2 tokenizer parity fixtures that tests/tokenizer_gpt2.rs checks.

1. tiktoken's `gpt2` encoding, built offline from the r50k_base.tiktoken rank file
that lmforge embeds (src/tokenizer/assets/r50k_base.tiktoken.gz; same sha256 as
tiktoken's download), encodes the first 20 KB of tinyshakespeare, a list of
adversarial strings and seeded random strings. Output:
tests/fixtures/tokenizer/gpt2_parity.json (~115 KB).

2. A small byte-level BPE trained and saved by Hugging Face `tokenizers`
(vocab 400, `<|endoftext|>`, ByteLevel pre-tokenizer without prefix space) on
the first 100 KB of tinyshakespeare, with the ids it gives the adversarial
strings: tests/fixtures/tokenizer/hf_bpe_tokenizer.json and hf_bpe_ids.json.

    python3 tools/tokenizer_fixtures.py [--shakespeare /work/shared/data/tinyshakespeare.txt]
"""
import argparse
import base64
import gzip
import hashlib
import json
import random
from pathlib import Path

import tiktoken

ROOT = Path(__file__).resolve().parent.parent
RANKS = ROOT / "src/tokenizer/assets/r50k_base.tiktoken.gz"
R50K_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
# tiktoken's own r50k pattern (equivalent to GPT-2's, written for speed).
GPT2_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

ADVERSARIAL = [
    "Hello world",
    "",
    " ",
    "\n",
    "a   b",
    "trailing spaces   ",
    "trailing newlines\n\n\n",
    "  leading and trailing  \n",
    "tabs\tand\t\ttabs \t \tend\t",
    "mixed \r\n windows \r\n\r\n line endings\r\n",
    " \n \n  \n   x",
    "DON'T it's we'll I'M they'Re 'll 'S x'sy ''s 've 'd 'm 're 'RE",
    "don't DON'T Don'T don’t",
    "1234567890 12 345 6789 1,000,000.50 3.14159265358979 0x1F -42 +7e10",
    "99999999999999999999999999999999999999",
    "emoji 🎉🎉 👩‍👩‍👧 🏳️‍🌈 ok 😀😃😄",
    "中文字符 日本語のテキスト 한국어 텍스트",
    "مرحبا بالعالم، هذا نص عربي.",
    "עברית ו-English mixed בטקסט",
    "e\u0301a\u0308 combining \u0301\u0301 marks n\u0303",
    "Ελληνικά και русский текст и English",
    "ｆｕｌｌｗｉｄｔｈ　ｓｐａｃｅ　and\u00a0nbsp\u2009thin\u2028line",
    "supercalifragilisticexpialidocious" * 8,
    "https://example.com/path?query=value&other=1#fragment",
    "def f(x):\n    return x**2  # comment\n\n\n    \tpass\n",
    "<|endoftext|>",
    "before<|endoftext|>after",
    "a <|endoftext|> b<|endoftext|><|endoftext|>\n<|endoftext|> ",
    "<|endoftext|",
    "<|endoftext|>text<|endoftext",
    "!!!???...,,,;;;:::---___===+++",
    " !!! ??? ... \n!!!\n",
    "\u0000\u0001\u001f\u007f control chars \u0085 next line",
    "\ufeffBOM and \ufffd replacement and \U0010ffff max",
    "x" * 3000,
    " " * 300 + "y",
    "\n" * 100,
]


def random_strings(n, seed=1234):
    rng = random.Random(seed)
    pool = list(" \n\t\r'sStTlLvedrm!.,?-_0123456789") + list("aé中٣½🎉\u0301\u00a0\u3000ſ") + ["<|endoftext|>"]
    out = []
    for _ in range(n):
        k = rng.randrange(1, 40)
        s = "".join(rng.choice(pool) if rng.random() < 0.8 else chr(rng.randrange(0x20, 0x2FFFF)) for _ in range(k))
        # Lone surrogates are not valid in UTF-8 text.
        out.append("".join(c for c in s if not 0xD800 <= ord(c) < 0xE000))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shakespeare", default="/work/shared/data/tinyshakespeare.txt")
    ap.add_argument("--out", default=str(ROOT / "tests/fixtures/tokenizer/gpt2_parity.json"))
    args = ap.parse_args()

    raw = gzip.decompress(RANKS.read_bytes())
    assert hashlib.sha256(raw).hexdigest() == R50K_SHA256, "embedded ranks differ from tiktoken's"
    ranks = {}
    for line in raw.splitlines():
        token, rank = line.split()
        ranks[base64.b64decode(token)] = int(rank)
    enc = tiktoken.Encoding(name="gpt2", pat_str=GPT2_PAT, mergeable_ranks=ranks,
                            special_tokens={"<|endoftext|>": 50256})

    shakespeare = Path(args.shakespeare).read_bytes()[:20_000].decode("utf-8", errors="ignore")
    cases = [("tinyshakespeare_20k", shakespeare)]
    cases += [(f"adversarial_{i}", s) for i, s in enumerate(ADVERSARIAL)]
    cases += [(f"random_{i}", s) for i, s in enumerate(random_strings(200))]
    out = {
        "encoding": "tiktoken gpt2 (r50k_base ranks, <|endoftext|> = 50256)",
        "tiktoken_version": tiktoken.__version__,
        "cases": [
            {
                "name": name,
                "text": text,
                # `encode_ordinary`: <|endoftext|> is plain text.
                "ordinary": enc.encode_ordinary(text),
                # `encode` with the special allowed (<|endoftext|> is 50256);
                # null where it equals `ordinary`, to keep the file small.
                "with_special": (enc.encode(text, allowed_special="all")
                                 if "<|endoftext|>" in text else None),
            }
            for name, text in cases
        ],
    }
    Path(args.out).write_text(json.dumps(out, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"wrote {args.out}: {len(cases)} cases, {Path(args.out).stat().st_size} bytes")
    write_hf_fixture(Path(args.shakespeare), Path(args.out).parent)


def write_hf_fixture(shakespeare, out_dir):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    text = shakespeare.read_bytes()[:100_000].decode("utf-8", errors="ignore")
    tok.train_from_iterator([text], trainer)
    tok_path = out_dir / "hf_bpe_tokenizer.json"
    tok.save(str(tok_path))
    cases = [{"text": s, "ids": tok.encode(s).ids} for s in ADVERSARIAL + [text[:3000]]]
    ids_path = out_dir / "hf_bpe_ids.json"
    ids_path.write_text(json.dumps({"tokenizers_version": __import__("tokenizers").__version__,
                                    "cases": cases}, ensure_ascii=False) + "\n")
    for p in (tok_path, ids_path):
        print(f"wrote {p}: {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
