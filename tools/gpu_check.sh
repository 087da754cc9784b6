#!/usr/bin/env bash
# Every GPU check of the CUDA backend, in one go, on a machine with the
# NVIDIA driver, the CUDA toolkit and PyTorch but no Rust (issue 13):
#   1. the GPU tests (each kernel against the CPU backend, the PyTorch
#      fixtures and gradient checks through the seam, whole training steps
#      against the CPU), with LMFORGE_REQUIRE_GPU=1 so none can skip;
#   2. char-baby on Tiny Shakespeare on the GPU (3 minutes at most), its
#      validation losses, then sampling from it on the GPU and on the CPU;
#   3. training speed, GPT-2 124M at block 1024, in the same call:
#      lmforge, llm.c's train_gpt2cu (built here) and nanoGPT with
#      torch.compile, as tokens/s and ratios.
# Prepare the bundle where Rust is (tools/gpu_bundle.sh), carry the working
# tree with target/gpu-bundle, then from the repository root:
#     bash tools/gpu_check.sh            # everything (about 10-12 minutes)
#     bash tools/gpu_check.sh tests      # 1 and 2 only (about 5 minutes)
#     bash tools/gpu_check.sh speed      # 3 only (about 5-7 minutes)
# Logs go to $OUT (or target/gpu-check); a summary is printed at the end.
# Exit status: 0 when every test run passed.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bundle=$root/target/gpu-bundle
log=${OUT:-$root/target/gpu-check}
mkdir -p "$log"
export LMFORGE_REQUIRE_GPU=1
# PyTorch's CUDA wheels (nvidia/*/lib) are one place lmforge finds NVRTC and
# cuBLASLt when no toolkit folder holds them.
site=$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null || true)
export PYTHONPATH=${site}${PYTHONPATH:+:$PYTHONPATH}
export LMFORGE_CUDA_CACHE=$log/kernel-cache
stage=${1:-all}
summary=$log/summary-$stage.txt
: >"$summary"
note() { echo "$*" | tee -a "$summary"; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$log/gpu.txt"

# The test executables read fixtures (and run lmforge) from the source
# folder compiled into them: make that path this checkout.
manifest=$(cat "$bundle/manifest_dir")
if [ ! -e "$manifest" ]; then
    mkdir -p "$(dirname "$manifest")" && ln -s "$root" "$manifest"
fi
mkdir -p "$manifest/target/release"
[ -x "$manifest/target/release/lmforge" ] || cp "$bundle/bin/lmforge" "$manifest/target/release/lmforge"
lmforge=$bundle/bin/lmforge

failed=0
run_tests() {
# 1. Tests.
run_test() { # name [filter]
    local name=$1
    shift
    (cd "$manifest" && timeout 300 "$bundle/bin/$name" --test-threads 1 --nocapture "$@") \
        >"$log/test-$name.txt" 2>&1
    local rc=$?
    note "test $name $*: exit $rc, $(grep -E '^test result' "$log/test-$name.txt" | tail -1)"
    grep -E 'panicked|FAILED|SKIPPED' "$log/test-$name.txt" | head -5 | tee -a "$summary"
    [ $rc = 0 ] || failed=1
}
run_test cuda_cli
run_test cuda_kernels
run_test pytorch_fixtures on_cuda
run_test gradcheck on_cuda
run_test cuda_training

# 2. char-baby on the GPU, against the clock; then sampling on both devices.
baby=$log/char-baby
rm -rf "$baby"
local start=$SECONDS
timeout 180 "$lmforge" train --device cuda --preset char-baby \
    --data "$bundle/data/tinyshakespeare.txt" --out "$baby" --quiet >"$log/char-baby.txt" 2>&1
note "char-baby: exit $? after $((SECONDS - start)) s (124: stopped at 3 minutes)"
grep '"eval":true' "$baby/metrics.jsonl" 2>/dev/null | tail -3 | tee -a "$summary"
for device in cuda cpu; do
    timeout 60 "$lmforge" sample "$baby" --device "$device" --max-new-tokens 200 --seed 1 \
        >"$log/sample-$device.txt" 2>&1
    note "sample on $device: exit $?, $(wc -c <"$log/sample-$device.txt") bytes"
done
}

run_speed() {
# 3. Speed, GPT-2 124M, block 1024, micro-batch 8.
B=8
T=1024
timeout 300 "$lmforge" bench train --device cuda --preset gpt2 --block $T --batch $B \
    --grad-accum 1 --steps 10 --warmup-steps 2 >"$log/bench-lmforge.txt" 2>&1
ours=$(grep -oE 'lmforge tokens/s: [0-9.]+' "$log/bench-lmforge.txt" | grep -oE '[0-9.]+$')
note "lmforge: ${ours:-none} tokens/s"

(cd "$bundle/llm.c" && make train_gpt2cu USE_CUDNN=0 NO_MULTI_GPU=1 >"$log/llmc-build.txt" 2>&1 &&
    timeout 300 ./train_gpt2cu -i "$bundle/data/tiny_shakespeare_train.bin" \
        -j "$bundle/data/tiny_shakespeare_val.bin" -e d12 -b $B -t $T -d $((B * T)) \
        -x 30 -v 100000 -s 100000 -h 0 >"$log/bench-llmc.txt" 2>&1)
llmc=$(grep -oE '[0-9]+ tok/s' "$log/bench-llmc.txt" | tail -1 | grep -oE '[0-9]+')
note "llm.c train_gpt2cu: ${llmc:-none} tokens/s ($(grep -oE '[0-9.]+% bf16 MFU' "$log/bench-llmc.txt" | tail -1))"

(cd "$bundle/nanoGPT" && timeout 400 python train.py --dataset=bench --batch_size=$B --block_size=$T \
    --gradient_accumulation_steps=1 --max_iters=30 --eval_interval=100000 --eval_iters=1 \
    --log_interval=1 --compile=True --dtype=bfloat16 --always_save_checkpoint=False \
    --out_dir="$log/nanogpt" >"$log/bench-nanogpt.txt" 2>&1)
ms=$(grep -oE 'time [0-9.]+ms' "$log/bench-nanogpt.txt" | tail -5 | grep -oE '[0-9.]+' | sort -n | sed -n 3p)
nano=$([ -n "$ms" ] && python3 -c "print(round($B * $T / ($ms / 1000)))")
note "nanoGPT torch.compile: ${nano:-none} tokens/s (median of its last 5 steps)"

    ratio() { [ -n "$1" ] && [ -n "$2" ] && python3 -c "print(f'{$1 / $2:.3f}x')" || echo "n/a"; }
note "lmforge / llm.c: $(ratio "$ours" "$llmc"); lmforge / nanoGPT: $(ratio "$ours" "$nano")"
}

case $stage in
    tests) run_tests ;;
    speed) run_speed ;;
    all) run_tests; run_speed ;;
    *) echo "usage: tools/gpu_check.sh [all|tests|speed]" >&2; exit 2 ;;
esac
[ "$stage" = speed ] || note "tests: $([ $failed = 0 ] && echo all passed || echo FAILURES, see $log/test-*.txt)"
exit $failed
