#!/usr/bin/env bash
# Compile-check the CUDA kernels of sparse_detr._C without a GPU: FORCE_CUDA=1 build for sm_90
# (override with TORCH_CUDA_ARCH_LIST) into a throw-away directory. Exits non-zero on a compile error.
set -euo pipefail
PYTHON=${PYTHON:-.venv/bin/python}
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export FORCE_CUDA=1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-2}
# torch locates the toolkit through `which nvcc`; a wrapper script outside the toolkit (here
# /usr/local/bin/nvcc) makes it look for libcudart in the wrong place, so prefer the real toolkit.
if [[ -z "${CUDA_HOME:-}" && -x /usr/local/cuda/bin/nvcc ]]; then
    export CUDA_HOME=/usr/local/cuda
fi
echo "[check_cuda_build] FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST CUDA_HOME=${CUDA_HOME:-auto} into $tmp"
"$PYTHON" setup.py -q build_ext --build-temp "$tmp/temp" --build-lib "$tmp/lib"
so=$(find "$tmp/lib" -name '_C*.so' | head -n 1)
if [[ -z "$so" ]]; then
    echo "[check_cuda_build] FAILED: no _C*.so was produced" >&2
    exit 1
fi
symbols=$(nm -D -C "$so")  # not piped into grep -q: an early exit would SIGPIPE nm under pipefail
if ! grep -q "sparse_detr::ms_deform_attn_forward_cuda" <<< "$symbols"; then
    echo "[check_cuda_build] FAILED: $so has no CUDA kernels (WITH_CUDA not set?)" >&2
    exit 1
fi
echo "[check_cuda_build] OK: $(basename "$so") built with the CUDA kernels"
