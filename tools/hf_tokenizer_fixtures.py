#!/usr/bin/env python3
"""Write the Hugging Face tokenizer fixtures that tests/tokenizer_hf_kinds.rs checks.

Trains, offline with Hugging Face `tokenizers`, four small tokenizers laid out
like the ones Llama-family models ship (and a Unigram and a WordPiece one), on the first 200 KB of tinyshakespeare
plus a few lines of other scripts (so that some characters are in the
vocabulary and others, like most emoji, are not):

- `llama3_bpe.json`: byte-level BPE with Llama-3's split regex (Split +
  ByteLevel without regex), `ignore_merges`, `<|begin_of_text|>`,
  `<|end_of_text|>`, `<|eot_id|>`, header tokens, a TemplateProcessing
  post-processor that adds `<|begin_of_text|>`.
- `qwen2_bpe.json`: byte-level BPE with Qwen2's regex (single digits), an NFC
  normalizer, `<|endoftext|>`, `<|im_start|>`, `<|im_end|>` (special) and
  `<think>`, `</think>` (added, not special), as Qwen3 ships them.
- `llama2_spm.json`: SentencePiece-style BPE as Llama-2/TinyLlama files are
  laid out: normalizer Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer,
  `byte_fallback` with `<0x00>`..`<0xFF>` in the vocabulary, `<unk>` with
  `fuse_unk`, `<s>`, `</s>`, the decoder Replace + ByteFallback + Fuse + Strip,
  a post-processor that adds `<s>`.
- `mistral_spm.json`: the same vocabulary the way newer converters write it
  (Mistral): no normalizer, a Metaspace pre-tokenizer (prepend "first",
  no split), plus one added non-special token `<tool>`.
- `t5_unigram.json`: a SentencePiece Unigram model (T5-style: Metaspace,
  `<unk>` for characters it lacks, no byte fallback).
- `bert_wordpiece.json`: a cased BERT-style WordPiece (`##` continuations,
  `[CLS]`, `[SEP]`, `[UNK]`).
- `bytelevel_partial.json`: a GPT-2-style byte-level BPE (ByteLevel
  pre-tokenizer and decoder, `<|endoftext|>`) trained WITHOUT the full
  256-byte initial alphabet, as `ByteLevelBPETokenizer().train(...)` does by
  default: bytes the training text lacks (0x00, most of 0x80-0xFF) have no
  token, so lmforge's own BPE cannot take it and `tokenizers` runs it.

The four Llama-family files and the partial byte-level one come out the same on every run; the Unigram and
WordPiece trainers break ties differently from run to run, so a rerun rewrites
those two with other, equally valid, vocabularies (the tests read whatever
was committed).

For each, `<name>.cases.json` holds the test texts with what `tokenizers`
gives: `ids` (encode without the post-processor's tokens, specials in the
text recognised), `ordinary` (`encode_special_tokens = True`: specials are
plain text), `decoded` (decode keeping specials) and `stream` (the text the
ids add after a preceding token: decode of [anchor] + ids minus the anchor's
text, which is what streaming one token at a time must produce).

    /root/bench-venv/bin/python tools/hf_tokenizer_fixtures.py \
        [--shakespeare /work/shared/data/tinyshakespeare.txt] [--only NAME ...]
"""
import argparse
import json
from collections import Counter
from pathlib import Path

import tokenizers
from tokenizers import (AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers,
                        processors, trainers)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/fixtures/tokenizer/hf"

LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# Other scripts in the training text: these characters get tokens, others do not.
EXTRA_TEXT = "\n".join([
    "café résumé naïve über straße façade à la crème brûlée",
    "中文字符 中文 日本語 日本語のテキスト",
    "Ελληνικά και русский текст",
    "tabs\tand\tnewlines\n\n  indented code:\n    return x",
    "numbers 1234567890 3.14159 2026-12-02",
] * 20)

TEXTS = [
    "",
    "Hello world",
    "First Citizen:\nBefore we proceed any further, hear me speak.",
    " leading space",
    "a   b    c     d",
    "trailing spaces   ",
    "tabs\tand\t\ttabs \t end\t",
    "lines\n\nand\r\nwindows\r\n\n\n",
    "1234567890 12 345 6789 1,000,000.50 3.14159",
    "café résumé naïve über straße",
    "e\u0301 combining and nfc \u00e9 and \u212b",
    "中文字符 日本語のテキスト 한국어",
    "emoji 🎉 👩‍👩‍👧 🏳️‍🌈 ok 😀😃",
    "rare chars ʬ ꙮ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \u0000\u007f",
    "DON'T it's we'll I'M they'Re",
    "<0x41> is text, not a byte",
    "supercalifragilisticexpialidocious" * 4,
    "def f(x):\n    return x**2  # comment\n",
]


def specials_texts(specials, plain_added):
    """Texts with the tokenizer's own special and added tokens in them."""
    a, b = specials[0], specials[-1]
    out = [a, f"{a}Hello{b}", f"say {b} twice{b}{b}\n{a} end", f"{a[:-1]} cut short {b[1:]}"]
    out += [f"x{t}y {t} z" for t in plain_added]
    return out


def corpus(shakespeare):
    return [shakespeare.read_bytes()[:200_000].decode("utf-8", errors="ignore"), EXTRA_TEXT]


def train_byte_level(texts, regex, specials, vocab_size, normalizer=None):
    tok = Tokenizer(models.BPE(ignore_merges=True))
    if normalizer is not None:
        tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(tokenizers.Regex(regex), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok


def llama3(texts):
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                "<|end_header_id|>", "<|eot_id|>"]
    tok = train_byte_level(texts, LLAMA3_REGEX, [], 600)
    # As in Llama 3, the specials come after the ordinary tokens.
    tok.add_special_tokens(specials)
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])
    return tok, specials, []


def qwen2(texts):
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = train_byte_level(texts, QWEN2_REGEX, [], 600, normalizer=normalizers.NFC())
    tok.add_special_tokens(specials)
    plain = ["<think>", "</think>"]
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in plain])
    return tok, specials, plain


def common_chars_only(texts, min_count=20):
    """The texts without their rare characters, which then have no token of their own.
    (Deterministic, unlike the trainer's `limit_alphabet`, which breaks ties at random.)"""
    counts = Counter("".join(texts))
    return ["".join(c for c in t if counts[c] >= min_count) for t in texts]


def train_spm(texts):
    """A SentencePiece-style BPE vocabulary: <unk>, <s>, </s>, 256 byte tokens, merges."""
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    # Training splits words at the ▁ that replaces each space.
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<unk>", "<s>", "</s>"] + byte_tokens,
                                  show_progress=False)
    tok.train_from_iterator(common_chars_only(texts), trainer)
    data = json.loads(tok.to_str())
    # In Llama's files the byte tokens are ordinary vocabulary entries, not added tokens.
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] in ("<unk>", "<s>", "</s>")]
    data["pre_tokenizer"] = None
    data["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    data["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
    return data


def llama2(spm):
    tok = Tokenizer.from_str(json.dumps(spm))
    return tok, ["<s>", "</s>"], []


def mistral(spm):
    data = json.loads(json.dumps(spm))
    data["normalizer"] = None
    data["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    tok = Tokenizer.from_str(json.dumps(data))
    plain = ["<tool>"]
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in plain])
    return tok, ["<s>", "</s>"], plain


def unigram(texts):
    """A T5-style SentencePiece Unigram: Metaspace, <unk> for unknown characters."""
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=500, special_tokens=["<pad>", "</s>", "<unk>"],
                                      unk_token="<unk>", show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok, ["</s>", "<pad>"], []


def wordpiece(texts):
    """A cased BERT-style WordPiece: BertPreTokenizer, `##` continuations, [CLS] [SEP]."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(vocab_size=600, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"],
                                        show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok, ["[CLS]", "[SEP]"], []


def bytelevel_partial(texts):
    """GPT-2's layout trained from the text's own characters only (no initial_alphabet)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=360, special_tokens=["<|endoftext|>"], show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return tok, ["<|endoftext|>"], []


def cases(tok, texts):
    ordinary = Tokenizer.from_str(tok.to_str())
    ordinary.encode_special_tokens = True
    # A token that decodes to a non-space letter: decoding [anchor] + ids keeps
    # the text's first space, which a decoder's Strip would take off at the start.
    anchor = tok.encode("A", add_special_tokens=False).ids[-1:]
    anchor_text = tok.decode(anchor)
    assert anchor_text.endswith("A"), anchor_text
    out = []
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False).ids
        stream = tok.decode(anchor + ids, skip_special_tokens=False)
        assert stream.startswith(anchor_text)
        out.append({
            "text": text,
            "ids": ids,
            "ordinary": ordinary.encode(text, add_special_tokens=False).ids,
            "decoded": tok.decode(ids, skip_special_tokens=False),
            "stream": stream[len(anchor_text):],
        })
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shakespeare", type=Path, default=Path("/work/shared/data/tinyshakespeare.txt"))
    ap.add_argument("--only", nargs="*", help="write only these fixtures (default: all)")
    args = ap.parse_args()
    texts = corpus(args.shakespeare)
    shakespeare_excerpt = texts[0][5000:7000]
    spm = train_spm(texts)
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (tok, specials, plain) in [
        ("llama3_bpe", llama3(texts)),
        ("qwen2_bpe", qwen2(texts)),
        ("llama2_spm", llama2(spm)),
        ("mistral_spm", mistral(spm)),
        ("t5_unigram", unigram(texts)),
        ("bert_wordpiece", wordpiece(texts)),
        ("bytelevel_partial", bytelevel_partial(texts)),
    ]:
        if args.only and name not in args.only:
            continue
        path = OUT / f"{name}.json"
        tok.save(str(path))
        # Test what a reader of the saved file gets.
        tok = Tokenizer.from_file(str(path))
        all_texts = TEXTS + specials_texts(specials, plain) + [shakespeare_excerpt]
        record = {
            "tokenizers_version": tokenizers.__version__,
            "vocab_size": tok.get_vocab_size(with_added_tokens=True),
            "specials": {t: tok.token_to_id(t) for t in specials},
            "plain_added": {t: tok.token_to_id(t) for t in plain},
            "cases": cases(tok, all_texts),
        }
        cases_path = OUT / f"{name}.cases.json"
        cases_path.write_text(json.dumps(record, ensure_ascii=False, indent=0) + "\n")
        for p in (path, cases_path):
            print(f"wrote {p.relative_to(ROOT)}: {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
