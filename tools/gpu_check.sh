#!/usr/bin/env bash
# Every GPU check of the CUDA backend in one call of under 6 minutes, on a
# machine with the NVIDIA driver (CUDA 13), python3, and for the speed table
# nvcc and PyTorch, but no Rust and no network (issue 32).
#
#   --stage tests   the GPU test binaries (each kernel against the CPU backend
#                   at small and GPT-2 sizes, the PyTorch fixtures and gradient
#                   checks through the seam, whole GPT and Llama training steps
#                   against the CPU, the host<->device copies per step), with
#                   LMFORGE_REQUIRE_GPU=1 so none can skip; then char-baby on
#                   Tiny Shakespeare on the GPU for at most 100 s, its
#                   validation loss, and a sample from it.
#   --stage speed   GPT-2 124M, B=8, T=1024: lmforge (TF32), llm.c's
#                   train_gpt2cu in bf16 and in fp32 (built here, patched
#                   for CUDA 13) and nanoGPT's train.py with torch.compile,
#                   as tokens/s with MFU beside them, in this one call.
#   --stage all     both (the default).
#   --patch-llmc FILE
#                   only apply the CUDA 13 patch to llm.c's llmc/cuda_utils.cuh
#                   FILE (what the speed stage does before its build), and exit.
#   --stage fake-pass | fake-fail | fake-missing
#                   checks of this script itself (no GPU): a stage whose
#                   test passes, one whose test fails, one with a speed
#                   number missing (tests/cuda_check_script.rs runs them).
#
# llm.c's build starts in the background first thing, so it overlaps the
# tests. Every step has a time limit cut from one budget
# (GPU_CHECK_BUDGET_S, default 330 s), so the call ends in time even when a
# step hangs; a step cut short is a failure, never a silent gap.
#
# Prepare the bundle where Rust is (tools/gpu_bundle.sh), carry
# target/gpu-bundle with the working tree, then from the repository root:
#     bash tools/gpu_check.sh --stage all
# Output: a summary on stdout (pass/fail counts, the speed table, the tails
# of failing logs), and every log in ONE tar, $OUT/gpu-check-logs.tar.gz
# ($OUT defaults to target/gpu-check-out).
# Exit status: 0 when every test passed and every number was measured;
# 1 otherwise; 2 for a bad argument.
set -uo pipefail
called_from=$PWD
cd "$(dirname "$0")/.."
root=$PWD

usage() {
    echo "usage: tools/gpu_check.sh [--stage tests|speed|all|fake-pass|fake-fail|fake-missing]"
    echo "       tools/gpu_check.sh --patch-llmc LLMC_DIR/llmc/cuda_utils.cuh"
}

# llm.c for CUDA 13: cudaMemAdvise's last argument became a cudaMemLocation
# (it was a device number, cudaCpuDeviceId for the host). Every call of the
# form cudaMemAdvise(ptr, bytes, advice, cudaCpuDeviceId) gets
# LLMC_CPU_LOCATION instead, defined after the file's first #include as the
# host location on CUDA 13 and as cudaCpuDeviceId before it. Applying it
# twice changes nothing; a file with no such call is an error (llm.c has
# changed: look again), unless it is already patched.
patch_llmc() { # file
    python3 - "$1" <<'PATCH'
import os, re, sys
path = sys.argv[1]
text = open(path).read()
if "LLMC_CPU_LOCATION" in text:
    print(f"{path}: already patched for CUDA 13")
    sys.exit(0)
call = re.compile(r"cudaMemAdvise\(([^;]*?),\s*cudaCpuDeviceId\s*\)")
text, calls = call.subn(r"cudaMemAdvise(\1, LLMC_CPU_LOCATION)", text)
if calls == 0:
    sys.exit(f"{path}: no cudaMemAdvise(..., cudaCpuDeviceId) to patch; llm.c has changed")
define = """
// lmforge's tools/gpu_check.sh: CUDA 13's cudaMemAdvise takes a cudaMemLocation.
#if CUDART_VERSION >= 13000
static inline cudaMemLocation llmc_cpu_location() {
    cudaMemLocation loc = {};
    loc.type = cudaMemLocationTypeHost;
    loc.id = 0;
    return loc;
}
#define LLMC_CPU_LOCATION llmc_cpu_location()
#else
#define LLMC_CPU_LOCATION cudaCpuDeviceId
#endif
"""
include = re.search(r"^#include [^\n]*\n", text, re.M)
if include is None:
    sys.exit(f"{path}: no #include line to put the definition after")
text = text[: include.end()] + define + text[include.end():]
with open(path + ".tmp", "w") as f:
    f.write(text)
os.replace(path + ".tmp", path)
print(f"{path}: patched {calls} cudaMemAdvise call(s) for CUDA 13")
PATCH
}

stage=all
while [ $# -gt 0 ]; do
    case $1 in
        --stage)
            [ $# -ge 2 ] || { usage >&2; exit 2; }
            stage=$2
            shift 2
            ;;
        --stage=*) stage=${1#--stage=}; shift ;;
        --patch-llmc)
            [ $# -ge 2 ] || { usage >&2; exit 2; }
            case $2 in /*) patch_llmc "$2" ;; *) patch_llmc "$called_from/$2" ;; esac
            exit $?
            ;;
        -h | --help) usage; exit 0 ;;
        *) echo "gpu_check: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
    esac
done
case $stage in
    tests | speed | all | fake-pass | fake-fail | fake-missing) ;;
    *) echo "gpu_check: unknown stage '$stage'" >&2; usage >&2; exit 2 ;;
esac
command -v python3 >/dev/null || { echo "gpu_check: python3 is needed" >&2; exit 1; }

bundle=$root/target/gpu-bundle
work=${GPU_CHECK_WORK:-$root/target/gpu-check}
out=${OUT:-$root/target/gpu-check-out}
logs=$work/logs
rm -rf "$work"
mkdir -p "$logs" "$out"
results=$work/results.tsv
: >"$results"
budget=${GPU_CHECK_BUDGET_S:-330}
deadline=$((SECONDS + budget))

# Seconds a step may take: what it wants, cut to what is left of the budget.
limit() {
    local left=$((deadline - SECONDS - 5))
    [ "$left" -lt "$1" ] && echo "$left" || echo "$1"
}

# record KIND NAME VALUE LOG [NOTE]: one line of the results the summary reads.
# KIND test: VALUE pass|fail. KIND number: VALUE a number, or - when missing.
record() {
    printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "${5:-}" >>"$results"
}

# run_test NAME LOG CMD...: run a command under the budget; exit 0 passes.
run_test() {
    local name=$1 log=$2
    shift 2
    local secs
    secs=$(limit 120)
    if [ "$secs" -lt 10 ]; then
        echo "not run: the time budget was spent" >"$log"
        record test "$name" fail "$log" "not run (budget spent)"
        return
    fi
    timeout -k 5 "$secs" "$@" >"$log" 2>&1
    local rc=$?
    local note="exit $rc"
    [ $rc = 124 ] && note="stopped after $secs s"
    if [ $rc = 0 ]; then record test "$name" pass "$log" "$note"; else record test "$name" fail "$log" "$note"; fi
}

# --- The GPU stages -------------------------------------------------------

# The test executables and lmforge, unpacked from the bundle.
unpack() {
    mkdir -p "$work/bin"
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
        "$bundle/bin.tar.xz" "$work/bin" || { echo "gpu_check: no bundle: run tools/gpu_bundle.sh" >&2; return 1; }
    # The tests read fixtures (and run lmforge) from the source folder
    # compiled into them: make that path this checkout.
    manifest=$(cat "$bundle/manifest_dir")
    if [ "$manifest" != "$root" ] && [ ! -e "$manifest" ]; then
        mkdir -p "$(dirname "$manifest")" && ln -s "$root" "$manifest"
    fi
    # And lmforge where the tests were told it is (CARGO_BIN_EXE_lmforge).
    local bin_dir
    bin_dir=$(cat "$bundle/bin_dir")
    mkdir -p "$bin_dir"
    cp "$work/bin/lmforge" "$bin_dir/lmforge"
}

# Patch llm.c for CUDA 13 (cudaMemAdvise takes a cudaMemLocation, not a
# device number) in DIR, then build its trainer with PRECISION in the background.
start_llmc_build() { # precision
    local precision=$1 dir=$work/llmc-$1
    cp -r "$bundle/llm.c" "$dir" 2>/dev/null || { echo "no llm.c in the bundle" >"$logs/llmc-build-$precision.txt"; return; }
    if ! patch_llmc "$dir/llmc/cuda_utils.cuh" >"$logs/llmc-patch-$precision.txt" 2>&1; then
        echo "patch failed" >>"$logs/llmc-build-$precision.txt"
        return
    fi
    (cd "$dir" && timeout "$(limit 240)" make train_gpt2cu PRECISION="$precision" NO_MULTI_GPU=1 USE_CUDNN=0 \
        >"$logs/llmc-build-$precision.txt" 2>&1) &
    eval "llmc_build_$precision=$!"
}

stage_tests() {
    export LMFORGE_REQUIRE_GPU=1
    local t
    for t in cuda_kernels cuda_training cuda_cli; do
        run_test "$t" "$logs/test-$t.txt" bash -c "cd '$manifest' && exec '$work/bin/$t' --test-threads 1"
    done
    for t in pytorch_fixtures gradcheck; do
        run_test "$t on_cuda" "$logs/test-$t.txt" bash -c "cd '$manifest' && exec '$work/bin/$t' --test-threads 1 on_cuda"
    done
    char_baby
}

# char-baby on the GPU against the clock: its last validation loss, and a sample.
char_baby() {
    local baby=$work/char-baby secs
    secs=$(limit 100)
    timeout "$secs" "$work/bin/lmforge" train --device cuda --preset char-baby \
        --data "$bundle/data/tinyshakespeare.txt" --out "$baby" --quiet >"$logs/char-baby.txt" 2>&1
    local rc=$?
    local val
    val=$(python3 - "$baby/metrics.jsonl" <<'EOF' 2>/dev/null
import json, sys
vals = [json.loads(l) for l in open(sys.argv[1]) if '"eval":true' in l.replace(" ", "")]
print(vals[-1]["val_loss"] if vals else "-")
EOF
)
    record number "char-baby val loss" "${val:--}" "$logs/char-baby.txt" "exit $rc after at most $secs s (124: stopped by the clock)"
    run_test "sample char-baby on cuda" "$logs/sample-cuda.txt" \
        "$work/bin/lmforge" sample "$baby" --device cuda --max-new-tokens 200 --seed 1
}

B=8
T=1024

stage_speed() {
    local secs log
    log=$logs/bench-lmforge.txt
    secs=$(limit 90)
    timeout "$secs" "$work/bin/lmforge" bench train --device cuda --preset gpt2 --block $T --batch $B \
        --grad-accum 1 --steps 10 --warmup-steps 2 >"$log" 2>&1
    record number "lmforge (TF32)" "$(grep -oE 'lmforge tokens/s: [0-9.]+' "$log" | grep -oE '[0-9.]+$' || echo -)" "$log"
    local precision pid
    for precision in BF16 FP32; do
        pid=$(eval "echo \${llmc_build_$precision:-}")
        [ -n "$pid" ] && wait "$pid"
        log=$logs/bench-llmc-$precision.txt
        secs=$(limit 60)
        if [ -x "$work/llmc-$precision/train_gpt2cu" ]; then
            (cd "$work/llmc-$precision" && timeout "$secs" ./train_gpt2cu -i "$bundle/data/tiny_shakespeare_train.bin" \
                -j "$bundle/data/tiny_shakespeare_val.bin" -e d12 -b $B -t $T -d $((B * T)) \
                -x 20 -v 100000 -s 100000 -h 0 -n 0 >"$log" 2>&1)
        else
            echo "train_gpt2cu was not built: see llmc-build-$precision.txt" >"$log"
        fi
        record number "llm.c train_gpt2cu ($precision)" \
            "$(grep -oE '[0-9]+ tok/s' "$log" | tail -1 | grep -oE '[0-9]+' || echo -)" "$log"
    done
    nanogpt
}

# nanoGPT's train.py with torch.compile in bf16: the median step time of its
# last 5 logged iterations.
nanogpt() {
    local log=$logs/bench-nanogpt.txt secs
    secs=$(limit 150)
    (cd "$bundle/nanoGPT" && timeout "$secs" python3 train.py --dataset=bench --batch_size=$B --block_size=$T \
        --gradient_accumulation_steps=1 --max_iters=25 --eval_interval=100000 --eval_iters=1 \
        --log_interval=1 --compile=True --dtype=bfloat16 --always_save_checkpoint=False \
        --out_dir="$work/nanogpt" >"$log" 2>&1)
    local tps
    tps=$(python3 - "$log" $B $T <<'EOF' 2>/dev/null
import re, statistics, sys
ms = [float(m) for m in re.findall(r"time ([0-9.]+)ms", open(sys.argv[1]).read())][-5:]
print(round(int(sys.argv[2]) * int(sys.argv[3]) / (statistics.median(ms) / 1000)) if len(ms) == 5 else "-")
EOF
)
    record number "nanoGPT torch.compile (bf16)" "${tps:--}" "$log"
}

# --- Checks of this script (no GPU) -----------------------------------------

stage_fake() {
    echo "NVIDIA H100 80GB HBM3 (fake), 580.00, 81559 MiB" >"$work/gpu.txt"
    run_test "fake passing test" "$logs/test-fake-pass.txt" bash -c 'echo "test result: ok. 3 passed; 0 failed"'
    record number "lmforge (fake)" 100000 "$logs/test-fake-pass.txt"
    case $stage in
        fake-fail)
            run_test "fake failing test" "$logs/test-fake-fail.txt" \
                bash -c 'echo "thread main panicked: fake failure"; echo "test result: FAILED. 1 passed; 1 failed"; exit 101'
            ;;
        fake-missing) record number "llm.c (fake)" - "$logs/test-fake-pass.txt" ;;
    esac
}

# --- Summary ---------------------------------------------------------------

summarise() {
    python3 - "$results" "$logs" "$work/gpu.txt" <<'EOF'
import os, re, sys
results, logs, gpu_file = sys.argv[1:4]
rows = [l.rstrip("\n").split("\t") for l in open(results) if l.strip()]
tests = [r for r in rows if r[0] == "test"]
numbers = [r for r in rows if r[0] == "number"]
gpu = open(gpu_file).read().strip() if os.path.exists(gpu_file) else "no GPU queried"
print("== gpu_check summary ==")
print("GPU:", gpu)
passed = sum(r[2] == "pass" for r in tests)
fn_pass = fn_fail = 0
for r in tests:
    if os.path.exists(r[3]):
        for p, f in re.findall(r"test result: \w+\. (\d+) passed; (\d+) failed", open(r[3], errors="replace").read()):
            fn_pass, fn_fail = fn_pass + int(p), fn_fail + int(f)
print(f"test runs: {passed} passed, {len(tests) - passed} failed "
      f"(test functions: {fn_pass} passed, {fn_fail} failed)")
for r in tests:
    print(f"  {'PASS' if r[2] == 'pass' else 'FAIL'}  {r[1]}  ({r[4]})")
# MFU: 6 N + 12 L C T flops per token (PaLM's count, as nanoGPT), GPT-2
# 124M (N with its 50257-token vocabulary), against the GPU's dense bf16 peak.
N, L, C = 124_439_808, 12, 768
flops_per_token = 6 * N + 12 * L * C * 1024
peaks = [("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("A100", 312.0), ("L4", 121.0)]
peak = os.environ.get("GPU_PEAK_TFLOPS")
peak = float(peak) if peak else next((p for name, p in peaks if name in gpu), None)
missing = [r for r in numbers if r[2] in ("-", "")]
speed = [r for r in numbers if "tokens" in r[1] or "lmforge" in r[1] or "llm.c" in r[1] or "nanoGPT" in r[1]]
if numbers:
    print(f"numbers (GPT-2 124M, B=8, T=1024; MFU against {peak or 'an unknown'} TFLOPS dense bf16):")
    ours = next((float(r[2]) for r in numbers if r[1].startswith("lmforge") and r[2] not in ("-", "")), None)
    for r in numbers:
        if r[2] in ("-", ""):
            print(f"  {r[1]:<34} MISSING")
        elif r in speed:
            tps = float(r[2])
            mfu = f"{100 * tps * flops_per_token / (peak * 1e12):5.1f}% MFU" if peak else "MFU n/a"
            ratio = f"lmforge / this {ours / tps:.3f}x" if ours else ""
            print(f"  {r[1]:<34} {tps:>10.0f} tokens/s  {mfu}  {ratio}")
        else:
            print(f"  {r[1]:<34} {r[2]}  ({r[4]})")
failing = [r for r in tests if r[2] != "pass"] + missing
for r in failing:
    path = r[3]
    print(f"--- {os.path.basename(path)} ({r[1]}), last 25 lines ---")
    if os.path.exists(path):
        lines = open(path, errors="replace").read().splitlines()
        print("\n".join(lines[-25:]))
bad = bool(failing)
print("RESULT:", "FAILED" if bad else "all passed, every number measured")
sys.exit(1 if bad else 0)
EOF
}

# --- Main ------------------------------------------------------------------

case $stage in
    fake-*) stage_fake ;;
    *)
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$work/gpu.txt" 2>&1
        if ! unpack; then
            record test "unpack the bundle" fail "$logs/unpack.txt" "no target/gpu-bundle"
        else
            export LMFORGE_CUDA_CACHE=$work/kernel-cache
            if [ "$stage" != tests ]; then
                start_llmc_build BF16
                start_llmc_build FP32
            fi
            [ "$stage" != speed ] && stage_tests
            [ "$stage" != tests ] && stage_speed
        fi
        ;;
esac
summarise | tee "$logs/summary.txt"
status=${PIPESTATUS[0]}
cp "$results" "$logs/"
tar -czf "$out/gpu-check-logs.tar.gz" -C "$work" logs
echo "logs: $out/gpu-check-logs.tar.gz ($((SECONDS)) s in all)"
exit "$status"
