#!/usr/bin/env bash
# LoRA fine-tuning of a TinyLlama-1.1B-shaped model (random weights): peak RSS and tokens/s.
#
#     bench/lora_memory.sh [PARENT_DIR] [RANK] [TARGETS]
#
# PARENT_DIR (default /tmp/lmforge-tinyllama) is made first if missing, by
# tools/make_random_llama.py with transformers (a 4.4 GB F32 folder: hidden 2048, 22 layers,
# 32 heads over 4 key/value heads, intermediate 5632, vocab 32000; never commit it). Then a
# short LoRA run on the built-in corpus: batch 1, block 256, 3 updates, 2 threads, rank RANK
# (default 16) on TARGETS (default: PEFT's for Llama, q_proj,v_proj), under /usr/bin/time -v.
# Prints the peak RSS ("Maximum resident set size") and the run's own tokens/s line.
set -euo pipefail
cd "$(dirname "$0")/.."
PARENT=${1:-/tmp/lmforge-tinyllama}
RANK=${2:-16}
TARGETS=${3:-q_proj,v_proj}
PYTHON=${PYTHON:-/root/bench-venv/bin/python}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
if [ ! -f "$PARENT/config.json" ]; then
    "$PYTHON" tools/make_random_llama.py "$PARENT" --shape tinyllama
fi
cargo build --release --quiet
/usr/bin/time -v target/release/lmforge train --init-from "$PARENT" --lora-rank "$RANK" --lora-targets "$TARGETS" \
    --batch 1 --block 256 --grad-accum 1 --max-iters 3 --eval-interval 3 --eval-iters 1 \
    --threads 2 --plot none --out "$OUT/run" 2> "$OUT/log" || { cat "$OUT/log"; exit 1; }
grep -E "^step|Maximum resident set size|Elapsed \(wall clock\)" "$OUT/log"
grep '"tokens_per_sec"' "$OUT/run/metrics.jsonl" | tail -2
