#!/usr/bin/env bash
# Installs NVIDIA's CUDA 13.0 compiler wheels (NVRTC and ptxas, no GPU needed)
# into a Python virtual environment, for the kernel compile check
# (tests/cuda_compile.rs). Usage: tools/cuda_venv.sh [VENV_DIR]
# (default target/cuda-venv, where the test looks; LMFORGE_CUDA_VENV overrides).
# 13.0 is the CUDA of driver 580, the GPU machines' driver: PTX and machine
# code from a newer NVRTC could not be loaded there.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${1:-${LMFORGE_CUDA_VENV:-target/cuda-venv}}"
if [ ! -x "$venv/bin/pip" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check \
    "nvidia-cuda-nvrtc==13.0.*" "nvidia-cuda-nvcc==13.0.*"
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
ls "$site"/nvidia/cu13/lib/libnvrtc.so.13 "$site"/nvidia/cu13/bin/ptxas
