#!/usr/bin/env bash
# Creates .venv and installs everything the project needs (torch, Detectron2, deps, dev tools).
# Called by `make setup`; safe to run again. Environment variables:
#   PYTHON      interpreter used to create the venv (default: python3)
#   D2_SOURCE   install Detectron2 from this source checkout or pip URL instead of the
#               registry wheel, e.g. D2_SOURCE='git+https://github.com/facebookresearch/detectron2.git'
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip

case "$(uname -m)" in
  aarch64|arm64) TORCH_PAIR="torch==2.9.1 torchvision==0.24.1" ;;
  *)             TORCH_PAIR="torch==2.14.1 torchvision==0.29.1" ;;
esac
echo "[setup] installing $TORCH_PAIR"
$PIP install -q $TORCH_PAIR

echo "[setup] installing Detectron2 dependencies"
$PIP install -q "setuptools<81" wheel ninja fvcore iopath pycocotools scipy timm "omegaconf>=2.1,<2.4" \
    hydra-core yacs termcolor tabulate cloudpickle tqdm tensorboard matplotlib black packaging Pillow \
    scikit-image opencv-python-headless

if [ -n "${D2_SOURCE:-}" ]; then
  echo "[setup] installing Detectron2 from D2_SOURCE=$D2_SOURCE"
  $PIP install -q --no-build-isolation "$D2_SOURCE"
elif ! "$VENV/bin/python" -c "import detectron2.modeling" 2>/dev/null; then
  # Detectron2 is not on PyPI under its own name; sal-detectron2 is a snapshot of its main branch,
  # tagged for CPython 3.10 only, so install its pure-Python sources in cross-version target mode.
  echo "[setup] installing Detectron2 (sal-detectron2 wheel)"
  SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  $PIP install -q --no-deps --only-binary=:all: --python-version 3.10 --target "$SITE" --upgrade \
      sal-detectron2==0.7.2
fi

echo "[setup] installing deployment runtimes (export to ONNX / OpenVINO)"
$PIP install -q onnx==1.23.2 onnxscript==0.7.2 onnxruntime==1.32.0 openvino==2026.4.1 onnxruntime-extensions==0.15.2

echo "[setup] installing dev tools"
$PIP install -q pytest pytest-timeout hypothesis ruff
echo "[setup] installing documentation tools"
$PIP install -q sphinx myst-parser furo sybil
"$VENV/bin/python" -c "import torch, torchvision, detectron2, fvcore, timm, scipy, pycocotools; \
print('[setup] torch', torch.__version__, '| torchvision', torchvision.__version__, '| detectron2', detectron2.__version__)"
