"""Shared fixtures: one tiny trained run for the whole session, and the
`lmforge` command line (target/release/lmforge, or $LMFORGE_BIN) to compare with."""

import json
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

import lmforge

REPO = Path(__file__).resolve().parents[2]
# Small enough to train in a second or two on two cores; the same shape in
# every test that compares runs. threads=2 makes the bits reproducible.
TINY = dict(
    n_layer=1, n_head=2, n_embd=16, block=16, batch=4, eval_iters=2, eval_interval=10,
    checkpoint_interval=1000, seed=7,
)


def lmforge_bin() -> Path:
    path = Path(os.environ.get("LMFORGE_BIN", REPO / "target" / "release" / "lmforge"))
    if not path.exists():
        pytest.fail(f"{path} not found: build it with `cargo build --release` or set LMFORGE_BIN")
    return path


def cli(*args, cwd=None, check=True):
    """Run the `lmforge` command line; returns the completed process."""
    done = subprocess.run([str(lmforge_bin()), *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)
    if check and done.returncode != 0:
        raise AssertionError(f"lmforge {' '.join(map(str, args))}: {done.stderr}")
    return done


@pytest.fixture(scope="session")
def text_file(tmp_path_factory) -> Path:
    """The first 40 kB of Tiny Shakespeare, as a file."""
    import gzip
    text = gzip.open(REPO / "data" / "tinyshakespeare.txt.gz", "rt", encoding="utf-8").read()
    path = tmp_path_factory.mktemp("data") / "shakespeare.txt"
    path.write_text(text[:40_000], encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, text_file) -> Path:
    """A char-level run trained for 20 steps from Python."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    lmforge.train(out=out, data=text_file, threads=2, max_iters=20, **TINY).wait()
    return out


def read_safetensors(path):
    """The f32 tensors of a .safetensors file, by name (the format: a u64
    header length, a JSON header of dtype/shape/offsets, then the data)."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(data[start:end], dtype="<f4").reshape(info["shape"])
    return tensors
