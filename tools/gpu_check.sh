#!/usr/bin/env bash
# The whole GPU verification in one command (also `make check-gpu`), run from the repository root of a
# machine with a CUDA GPU and no package registry:
#   1. installs the wheels carried in .whl/ (tools/gpu_wheels.sh makes them) into a scratch site next to
#      the machine's torch, and builds sparse_detr._C in place with the CUDA kernels for the GPU present;
#   2. runs the CUDA tests (op against the CPU kernel and the float64 reference, gradcheck, Q = 0,
#      non-contiguous, 1x1 levels, half/bfloat16 autocast, non-finite inputs, the whole model CPU vs CUDA)
#      and an AMP training run of the quickstart config on one GPU whose loss must fall and stay finite;
#   3. measures the kernel and the model (benchmarks/bench_gpu.py);
#   4. writes gpu_report.json, gpu_report.md and gpu_check.log into $OUT (default output/gpu_check) and
#      prints a one-line summary last.
# Every step has a time limit inside one overall budget (GPU_CHECK_BUDGET seconds, default 480), so the
# report is written even when a step fails or hangs. Exit status 0 only when every step and target passed.
#
#   tools/gpu_check.sh            # on the GPU machine (python3 = the machine's Python with torch)
#   tools/gpu_check.sh --dry-run  # on any machine: every step that needs no GPU, small CPU sizes
#
# The wheels must be the ones of tools/gpu_wheels.txt, each with its pinned sha256 (missing or other wheels
# fail the check, a dry run included: it says what a GPU run would lack).
# Environment: PYTHON (default python3; .venv/bin/python for --dry-run when present), OUT, GIT_COMMIT
# (the commit, recorded in the report when the tree travels without .git), GPU_CHECK_BUDGET, TMPDIR,
# TORCH_CUDA_ARCH_LIST (default: the capability of the GPU present), CUDA_HOME, WHEELS_DIR (default .whl).
set -uo pipefail
cd "$(dirname "$0")/.."
DRY_RUN=0
case "${1:-}" in
    --dry-run) DRY_RUN=1 ;;
    "") ;;
    *) echo "usage: tools/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac
START=$(date +%s)
BUDGET=${GPU_CHECK_BUDGET:-480}
REPORT_RESERVE=30  # seconds kept for the report
OUT=${OUT:-output/gpu_check}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")  # scratch: $OUT brings back a few files only
LOG="$OUT/gpu_check.log"
: > "$LOG"
exec > >(tee -a "$LOG") 2>&1
if ((DRY_RUN)); then
    [[ -x .venv/bin/python ]] && PYTHON=${PYTHON:-.venv/bin/python}
fi
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
export DETECTRON2_DATASETS="$WORK/datasets"
SITE="$WORK/site"
WHEELS_DIR=${WHEELS_DIR:-.whl}
CUDA_TESTS=(tests/layers/test_ms_deform_attn_cuda.py tests/modeling/test_sparse_detr_cuda.py)
TRAIN_CONFIG=configs/quickstart_shapes.py
# ~100 AMP iterations of the quickstart model on one GPU; it trains on shapes_val (300 images) so that the
# 3000-image training set need not be generated, and is evaluated on it at the end
TRAIN_OVERRIDES=(train.device=cuda train.amp.enabled=True train.max_iter=100 train.log_period=5
                 train.eval_period=0 train.checkpointer.period=1000 "train.output_dir=$WORK/train"
                 'dataloader.train.dataset.names=shapes_val' dataloader.train.num_workers=4
                 dataloader.test.num_workers=4)
echo "[gpu_check] $( ((DRY_RUN)) && echo 'dry run' || echo 'GPU run'), python $PYTHON, OUT=$OUT, scratch $WORK," \
     "budget ${BUDGET} s"

remaining() { echo $((START + BUDGET - REPORT_RESERVE - $(date +%s))); }

# step NAME LIMIT_SECONDS COMMAND...: run with a time limit (cut to what the budget has left); record it
step() {
    local name=$1 limit=$2 left
    shift 2
    left=$(remaining)
    if ((left < 10)); then
        echo "[gpu_check] step $name: skipped, the time budget is spent"
        printf '%s\tno time left\t0\n' "$name" >> "$WORK/steps.tsv"
        return 1
    fi
    ((limit > left)) && limit=$left
    echo "[gpu_check] step $name (limit ${limit} s): $*"
    local begin=$(date +%s) status rc
    # shell functions run in a child bash (exported below); timeout ends the whole process group
    timeout --kill-after=10 "$limit" bash -c '"$@"' "$name" "$@"
    rc=$?
    case $rc in
        0) status=ok ;;
        124 | 137) status="timed out after ${limit} s" ;;
        *) status="failed (exit $rc)" ;;
    esac
    printf '%s\t%s\t%d\n' "$name" "$status" $(($(date +%s) - begin)) >> "$WORK/steps.tsv"
    echo "[gpu_check] step $name: $status ($(($(date +%s) - begin)) s)"
    return $rc
}

skip() {  # skip NAME REASON
    echo "[gpu_check] step $1: skipped ($2)"
    printf '%s\tskipped\t0\n' "$1" >> "$WORK/steps.tsv"
}

environment() {
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$WORK/nvidia_smi.csv" || true
        nvidia-smi -L || true
    fi
    "$PYTHON" - <<'PY'
import platform
import torch
print(f"Python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"CUDA available: {torch.cuda.is_available()}")
if torch.cuda.is_available():
    print(f"GPU {torch.cuda.get_device_name()} (capability {'.'.join(map(str, torch.cuda.get_device_capability()))})")
PY
}

install_wheels() {
    # only the wheels of the list, with their pinned sha256 (names alone prove nothing)
    "$PYTHON" tools/gpu_check.py wheels "$WHEELS_DIR" --summary "$WORK/wheels.json" || return 1
    local wheels=("$WHEELS_DIR"/*.whl)
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --disable-pip-version-check --target "$SITE" "${wheels[@]}"
}

build_extension() {
    local arch=${TORCH_CUDA_ARCH_LIST:-}  # default: the GPU present
    [[ -n $arch ]] || arch=$("$PYTHON" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())') \
        || return 1
    if [[ -z "${CUDA_HOME:-}" ]]; then
        if [[ -x /usr/local/cuda/bin/nvcc ]]; then export CUDA_HOME=/usr/local/cuda
        elif command -v nvcc >/dev/null; then CUDA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
            export CUDA_HOME; fi
    fi
    echo "TORCH_CUDA_ARCH_LIST=$arch CUDA_HOME=${CUDA_HOME:-?} MAX_JOBS=$(nproc)"
    rm -rf build sparse_detr/_C*.so
    FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=$arch MAX_JOBS=$(nproc) "$PYTHON" setup.py -q build_ext --inplace \
        || return 1
    "$PYTHON" -c 'from sparse_detr import _ext; info = _ext.extension_info(); print(info); \
assert info["with_cuda"], "sparse_detr._C has no CUDA kernels"'
}

run_tests() {  # run_tests JUNIT_XML [--no-skips] PYTEST_ARGS...
    local junit=$1 strict=$2
    shift 2
    "$PYTHON" -m pytest -q -p no:cacheprovider -rs --junitxml="$junit" "$@"
    local rc=$?
    "$PYTHON" tools/gpu_check.py tests "$junit" $strict && return $rc
}

train() {  # train OVERRIDES...
    "$PYTHON" tools/generate_shapes.py shapes_val || return 1
    "$PYTHON" train_net.py --config-file "$TRAIN_CONFIG" --num-gpus 1 "$@" || return 1
    "$PYTHON" tools/gpu_check.py train-summary "$WORK/train/metrics.json" "$WORK/train_summary.json"
}

export -f environment install_wheels build_extension run_tests train
export PYTHON WORK SITE TRAIN_CONFIG WHEELS_DIR

if ((DRY_RUN)); then
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    step environment 60 environment
    step dependencies 120 "$PYTHON" tools/gpu_check.py deps --wheels-dir "$WHEELS_DIR" --summary "$WORK/wheels.json"
    skip build "no GPU: the environment's own sparse_detr._C is used"
    step cuda-tests 180 run_tests "$WORK/cuda_tests.xml" "" -m cuda "${CUDA_TESTS[@]}"
    step training-overrides 120 "$PYTHON" tools/gpu_check.py overrides "$TRAIN_CONFIG" "${TRAIN_OVERRIDES[@]}"
    skip training "no GPU"
    step benchmark 240 "$PYTHON" -m benchmarks.bench_gpu --small --device cpu --json "$WORK/bench.json"
else
    export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
    step environment 60 environment
    step wheels 120 install_wheels
    step dependencies 60 "$PYTHON" tools/gpu_check.py deps
    step build 300 build_extension
    step cuda-tests 180 run_tests "$WORK/cuda_tests.xml" --no-skips -m cuda "${CUDA_TESTS[@]}"
    step op-tests-cpu 120 run_tests "$WORK/op_tests.xml" "" tests/layers -m "not cuda"
    step training 240 train "${TRAIN_OVERRIDES[@]}"
    step benchmark 300 "$PYTHON" -m benchmarks.bench_gpu --json "$WORK/bench.json"
fi

cp "$WORK/train/metrics.json" "$OUT/train_metrics.json" 2>/dev/null || true
command_line="tools/gpu_check.sh$( ((DRY_RUN)) && echo ' --dry-run')"
"$PYTHON" tools/gpu_check.py report --work "$WORK" --out "$OUT" --command-line "$command_line" \
    --seconds $(($(date +%s) - START)) $( ((DRY_RUN)) && echo --dry-run)
rc=$?
rm -rf "$WORK"
exit $rc
