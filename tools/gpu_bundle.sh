#!/usr/bin/env bash
# Prepares target/gpu-bundle, everything tools/gpu_check.sh needs on a GPU
# machine that has the NVIDIA driver, the CUDA toolkit and PyTorch but no
# Rust and no network:
#   bin/      the lmforge binary and the GPU test executables, stripped
#   llm.c/    llm.c's CUDA trainer sources (train_gpt2.cu, llmc/, Makefile)
#   nanoGPT/  nanoGPT's train.py, model.py, configurator.py
#   data/     Tiny Shakespeare in GPT-2 token ids, as llm.c shards and as
#             nanoGPT's raw uint16 train.bin / val.bin
# The llm.c and nanoGPT sources are copied from git checkouts made outside
# this repository (they are not ours to commit); target/ is ignored by git.
#
# Usage: tools/gpu_bundle.sh LLMC_GIT_DIR NANOGPT_GIT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
llmc=$1
nanogpt=$2
out=target/gpu-bundle
rm -rf "$out"
mkdir -p "$out/bin" "$out/llm.c" "$out/nanoGPT/data/bench" "$out/data"

cargo build --release --locked
strip -o "$out/bin/lmforge" target/release/lmforge
for t in cuda_kernels cuda_training pytorch_fixtures gradcheck cuda_cli; do
    exe=$(cargo test --release --locked --no-run --test "$t" --message-format=json 2>/dev/null |
        python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["executable"])')
    strip -o "$out/bin/$t" "$exe"
done
# The tests read their fixtures from the source folder compiled into them.
pwd > "$out/manifest_dir"

git --git-dir="$llmc" archive HEAD train_gpt2.cu Makefile llmc | tar -x -C "$out/llm.c"
git --git-dir="$nanogpt" archive HEAD train.py model.py configurator.py | tar -x -C "$out/nanoGPT"

# GPT-2 ids of Tiny Shakespeare; the first 32768 are validation (as llm.c's own split).
"$out/bin/lmforge" tokenizer encode ../shared/data/tinyshakespeare.txt --tokenizer gpt2 |
    python3 -c '
import struct, sys
ids = [int(x) for x in sys.stdin.read().split()]
val, train = ids[:32768], ids[32768:]
out = sys.argv[1]
for name, toks in (("train", train), ("val", val)):
    body = struct.pack("<%dH" % len(toks), *toks)
    header = struct.pack("<256i", 20240520, 1, len(toks), *([0] * 253))
    open(f"{out}/data/tiny_shakespeare_{name}.bin", "wb").write(header + body)
    open(f"{out}/nanoGPT/data/bench/{name}.bin", "wb").write(body)
' "$out"
cp ../shared/data/tinyshakespeare.txt "$out/data/"
du -sh "$out"
