#!/usr/bin/env bash
# Prepares target/gpu-bundle, everything tools/gpu_check.sh needs on a GPU
# machine that has the NVIDIA driver, python3, nvcc and PyTorch but no Rust
# and no network, in under 64 MiB (what a device call carries):
#   bin.tar.xz   lmforge and the GPU test executables, stripped, built for a
#                portable CPU (x86-64-v2: any x86-64 of the last 15 years;
#                .cargo/config.toml's target-cpu=native is overridden, as
#                the GPU host's CPU is not this one), xz-compressed together
#   manifest_dir the source folder compiled into the tests (they read
#                fixtures from it; gpu_check.sh points it at the checkout)
#   bin_dir      where the tests look for lmforge (CARGO_BIN_EXE_lmforge)
#   data/        Tiny Shakespeare, and its GPT-2 token ids as llm.c shards
#   llm.c/       llm.c's CUDA trainer sources (train_gpt2.cu, llmc/, Makefile)
#   nanoGPT/     nanoGPT's train.py, model.py, configurator.py, and the same
#                ids as its raw uint16 data/bench/{train,val}.bin
# llm.c and nanoGPT come from git checkouts made outside this repository
# (they are not ours to commit); without them the bundle is made anyway and
# gpu_check.sh's speed stage reports their numbers missing (and fails).
# The portable build has its own target folder (target/portable), so it
# leaves the native one alone.
#
# Usage: tools/gpu_bundle.sh [LLMC_GIT_DIR NANOGPT_GIT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
llmc=${1:-}
nanogpt=${2:-}
out=target/gpu-bundle
stage=target/gpu-bundle-bin
limit_mib=64
tests=(cuda_kernels cuda_training cuda_cli pytorch_fixtures gradcheck)

export CARGO_TARGET_DIR=target/portable
export RUSTFLAGS="-C target-cpu=x86-64-v2"
export CARGO_PROFILE_RELEASE_DEBUG=0

rm -rf "$out" "$stage"
mkdir -p "$out/data" "$stage"

cargo build --release --locked --bin lmforge
strip -o "$stage/lmforge" "$CARGO_TARGET_DIR/release/lmforge"
test_args=()
for t in "${tests[@]}"; do test_args+=(--test "$t"); done
cargo test --release --locked --no-run "${test_args[@]}" --message-format=json |
    python3 -c '
import json, shutil, subprocess, sys
stage, wanted = sys.argv[1], set(sys.argv[2:])
found = set()
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        name = m["target"]["name"]
        if name in wanted:
            subprocess.run(["strip", "-o", f"{stage}/{name}", m["executable"]], check=True)
            found.add(name)
missing = wanted - found
if missing:
    sys.exit(f"gpu_bundle: no executable for {sorted(missing)}")
' "$stage" "${tests[@]}"

# One xz stream over all executables: they share most of their code, and
# xz -9's 64 MiB dictionary finds it across files.
python3 -c '
import lzma, os, sys, tarfile
stage, dest = sys.argv[1], sys.argv[2]
with tarfile.open(dest, "w:xz", preset=9 | lzma.PRESET_EXTREME) as tar:
    for name in sorted(os.listdir(stage)):
        tar.add(os.path.join(stage, name), arcname=name)
' "$stage" "$out/bin.tar.xz"
pwd >"$out/manifest_dir"
echo "$PWD/$CARGO_TARGET_DIR/release" >"$out/bin_dir"

cp ../shared/data/tinyshakespeare.txt "$out/data/"
if [ -n "$llmc" ]; then
    mkdir -p "$out/llm.c"
    git --git-dir="$llmc" archive HEAD train_gpt2.cu Makefile llmc | tar -x -C "$out/llm.c"
else
    echo "gpu_bundle: no llm.c checkout given: the speed stage will miss llm.c's numbers" >&2
fi
if [ -n "$nanogpt" ]; then
    mkdir -p "$out/nanoGPT/data/bench"
    git --git-dir="$nanogpt" archive HEAD train.py model.py configurator.py | tar -x -C "$out/nanoGPT"
else
    echo "gpu_bundle: no nanoGPT checkout given: the speed stage will miss nanoGPT's number" >&2
fi

# GPT-2 ids of Tiny Shakespeare; the first 32768 are validation (as llm.c's own split).
"$stage/lmforge" tokenizer encode ../shared/data/tinyshakespeare.txt --tokenizer gpt2 |
    python3 -c '
import os, struct, sys
ids = [int(x) for x in sys.stdin.read().split()]
val, train = ids[:32768], ids[32768:]
out = sys.argv[1]
for name, toks in (("train", train), ("val", val)):
    body = struct.pack("<%dH" % len(toks), *toks)
    header = struct.pack("<256i", 20240520, 1, len(toks), *([0] * 253))
    open(f"{out}/data/tiny_shakespeare_{name}.bin", "wb").write(header + body)
    if os.path.isdir(f"{out}/nanoGPT/data/bench"):
        open(f"{out}/nanoGPT/data/bench/{name}.bin", "wb").write(body)
' "$out"
rm -rf "$stage"

bytes=$(du -sb "$out" | cut -f1)
echo "gpu_bundle: $out is $(python3 -c "print(f'{$bytes / 2**20:.1f}')") MiB (limit $limit_mib MiB; bin.tar.xz $(du -h "$out/bin.tar.xz" | cut -f1))"
if [ "$bytes" -ge $((limit_mib << 20)) ]; then
    echo "gpu_bundle: over the $limit_mib MiB a device call carries" >&2
    exit 1
fi
