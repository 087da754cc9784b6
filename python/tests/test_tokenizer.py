"""lmforge.Tokenizer: ids as numpy uint32, equal to tiktoken's for GPT-2."""

import base64
import gzip
import hashlib

import numpy as np
import pytest

import lmforge
from conftest import REPO

R50K_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
# tiktoken's own r50k pattern (equivalent to GPT-2's).
GPT2_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

TEXTS = [
    "Hello world",
    "  leading spaces, trailing  ",
    "It's 2024: numbers 1234567 and symbols #$%!",
    "Ünïcödé — emoji 🙂 and 中文字符",
    "line one\n\nline two\r\n\ttab",
    "",
]


def tiktoken_gpt2():
    """tiktoken's `gpt2` encoding built offline (no download) from the rank
    file lmforge embeds, checked against the sha256 of tiktoken's download,
    as tools/tokenizer_fixtures.py does."""
    tiktoken = pytest.importorskip("tiktoken")
    raw = gzip.open(REPO / "src/tokenizer/assets/r50k_base.tiktoken.gz").read()
    assert hashlib.sha256(raw).hexdigest() == R50K_SHA256
    ranks = {base64.b64decode(token): int(rank)
             for token, rank in (line.split() for line in raw.decode().splitlines() if line)}
    return tiktoken.Encoding(name="gpt2", pat_str=GPT2_PAT, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256})


def test_gpt2_ids_equal_tiktoken(text_file):
    reference = tiktoken_gpt2()
    tok = lmforge.Tokenizer.gpt2()
    assert tok.vocab_size == 50257 and tok.eot_token == 50256
    for text in TEXTS:
        ids = tok.encode(text)
        assert ids.dtype == np.uint32 and ids.ndim == 1
        assert ids.tolist() == reference.encode(text), text
        assert tok.decode(ids) == text
    shakespeare = text_file.read_text(encoding="utf-8")
    assert tok.encode(shakespeare).tolist() == reference.encode(shakespeare)
    assert tok.encode("a<|endoftext|>b").tolist() == reference.encode(
        "a<|endoftext|>b", allowed_special="all")


def test_encode_batch_is_encode_of_each():
    tok = lmforge.Tokenizer.gpt2()
    batch = tok.encode_batch(TEXTS)
    assert [b.tolist() for b in batch] == [tok.encode(t).tolist() for t in TEXTS]


def test_char_tokenizer_and_its_errors():
    tok = lmforge.Tokenizer.char("hello world")
    assert tok.vocab_size == len(set("hello world")) == len(tok)
    ids = tok.encode("hello")
    assert ids.tolist() == [sorted(set("hello world")).index(c) for c in "hello"]
    assert tok.decode(ids) == "hello"
    with pytest.raises(lmforge.BadInputError, match="not in the vocabulary"):
        tok.encode("xyz")
    with pytest.raises(lmforge.BadInputError, match="outside the vocabulary"):
        tok.decode([99])
    with pytest.raises(lmforge.BadInputError):
        tok.decode([-1])
    with pytest.raises(lmforge.BadInputError):
        lmforge.Tokenizer.char("")


def test_save_and_from_file_round_trip(tmp_path):
    tok = lmforge.Tokenizer.char("abc\n")
    tok.save(tmp_path / "tokenizer.json")
    again = lmforge.Tokenizer.from_file(tmp_path / "tokenizer.json")
    assert again.encode("cab\n").tolist() == tok.encode("cab\n").tolist()
    with pytest.raises(lmforge.FileError, match="missing.json"):
        lmforge.Tokenizer.from_file(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(lmforge.BadInputError, match="bad.json"):
        lmforge.Tokenizer.from_file(tmp_path / "bad.json")


def test_train_a_bpe(tmp_path, text_file):
    tok = lmforge.Tokenizer.train([text_file], 300, special=["<|endoftext|>"])
    assert tok.vocab_size == 300
    assert tok.eot_token == 299
    text = "ROMEO: What light through yonder window breaks?"
    ids = tok.encode(text)
    assert len(ids) < len(text), "merges make tokens longer than one byte"
    assert tok.decode(ids) == text
    with pytest.raises(lmforge.BadInputError, match="smaller than 256"):
        lmforge.Tokenizer.train([text_file], 100)
    with pytest.raises(lmforge.BadInputError, match="unknown pattern"):
        lmforge.Tokenizer.train([text_file], 300, pattern="gpt5")
