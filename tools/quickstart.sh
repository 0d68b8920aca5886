#!/usr/bin/env bash
# The quickstart (run by `make quickstart` after `make setup`): generate the synthetic shapes set, train the
# quickstart Sparse DETR on the CPU, evaluate it with COCOEvaluator, print the COCO AP table and draw
# predictions on validation images. Writes output/quickstart/: model_final.pth, config.yaml,
# final_metrics.json, predictions_val.png, log.txt, metrics.json, TensorBoard events.
# Environment: PYTHON (default .venv/bin/python), DETECTRON2_DATASETS (default ./datasets).
# Arguments are passed to train_net.py as config overrides (e.g. a smoke test: train.max_iter=2).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=output/quickstart

echo "[quickstart] generating the synthetic shapes set (skipped when already there)"
"$PYTHON" tools/generate_shapes.py shapes_train shapes_val

echo "[quickstart] training + evaluation on the CPU (configs/quickstart_shapes.py)"
rm -rf "$OUT"
start=$(date +%s)
"$PYTHON" train_net.py --config-file configs/quickstart_shapes.py train.output_dir="$OUT" "$@"
elapsed=$(( $(date +%s) - start ))

echo "[quickstart] drawing predictions on validation images"
"$PYTHON" projects/SparseDETR/draw_predictions.py --config-file "$OUT/config.yaml" \
    --weights "$OUT/model_final.pth" --dataset shapes_val --num-images 8 --score-threshold 0.3 \
    --output "$OUT/predictions_val.png"

"$PYTHON" - "$OUT/final_metrics.json" "$elapsed" <<'PY'
import json
import sys

from tabulate import tabulate

bbox = json.load(open(sys.argv[1]))["bbox"]
keys = ["AP", "AP50", "AP75", "APs", "APm", "APl"]
print("\nCOCO bbox AP on shapes_val:")
print(tabulate([[f"{bbox[k]:.1f}" for k in keys]], headers=keys, tablefmt="pipe"))
minutes = int(sys.argv[2]) / 60
met = bbox["AP"] >= 40 and bbox["AP50"] >= 50
print(f"training + evaluation: {minutes:.1f} min; target AP >= 40 and AP50 >= 50: {'met' if met else 'NOT met'}")
PY
echo "[quickstart] outputs in $OUT/"
