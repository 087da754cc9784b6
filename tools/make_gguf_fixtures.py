"""Write tests/fixtures/gguf/kquants.gguf: Q4_K and Q6_K blocks and what gguf-py dequantizes them to.

    /work/venv/bin/python tools/make_gguf_fixtures.py

Random blocks (random bytes, with the f16 scales set to modest values so every value is finite)
are stored as tensors `q4_k` (2 rows of 512 values) and `q6_k` (2 rows of 256), and gguf-py's
`quants.dequantize` of the same bytes as F32 tensors `q4_k.expected` and `q6_k.expected`
(tests/gguf.rs checks lmforge reads them equal). Also `q8_0`/`q4_0` of random values with
gguf-py's `quants.quantize`, and the values as `*.source`, so lmforge's quantizers are checked
byte for byte. Nothing is downloaded; the file is a few kilobytes.
"""
import pathlib

import numpy as np
from gguf import GGMLQuantizationType as T, GGUFWriter, quants

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "gguf" / "kquants.gguf"


def random_blocks(rng, qtype, rows, cols):
    block, size = {T.Q4_K: (256, 144), T.Q6_K: (256, 210)}[qtype]
    raw = rng.integers(0, 256, size=(rows, cols // block, size), dtype=np.uint8)
    scales = rng.uniform(-0.05, 0.05, size=(rows, cols // block, 2)).astype(np.float16).view(np.uint8)
    if qtype == T.Q4_K:  # d, dmin first
        raw[..., 0:4] = scales.reshape(rows, cols // block, 4)
    else:  # d last
        raw[..., 208:210] = scales[..., 0:2].reshape(rows, cols // block, 2)
    return raw.reshape(rows, -1)


def main():
    rng = np.random.default_rng(0)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    w = GGUFWriter(OUT, "llama")
    for name, qtype, cols in [("q4_k", T.Q4_K, 512), ("q6_k", T.Q6_K, 256)]:
        blocks = random_blocks(rng, qtype, 2, cols)
        w.add_tensor(name, blocks, raw_dtype=qtype)
        w.add_tensor(f"{name}.expected", quants.dequantize(blocks, qtype).astype(np.float32))
    for name, qtype in [("q8_0", T.Q8_0), ("q4_0", T.Q4_0)]:
        values = rng.normal(0, 1, size=(3, 64)).astype(np.float32)
        values[1, :32] = 0.0  # an all-zero block
        w.add_tensor(name, quants.quantize(values, qtype), raw_dtype=qtype)
        w.add_tensor(f"{name}.source", values)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
