#!/usr/bin/env python
"""Draws a model's predictions on dataset images with Detectron2's ``Visualizer`` into one PNG grid.

    python projects/SparseDETR/draw_predictions.py --config-file output/quickstart/config.yaml \\
        --weights output/quickstart/model_final.pth --dataset shapes_val --output predictions.png
"""

from __future__ import annotations

import argparse
import io
import sys

from detectron2.config import LazyConfig
from PIL import Image

import sparse_detr.modeling  # noqa: F401
from sparse_detr.config.arguments import positive_int, unit_interval
from sparse_detr.config.safe_yaml import check_config_file
from sparse_detr.data.catalog import check_dataset_names, register_config_datasets
from sparse_detr.engine.predictor import Predictor
from sparse_detr.utils.cli import run_tool
from sparse_detr.utils.files import atomic_write, refuse_overwriting_inputs
from sparse_detr.visualization import draw_prediction_grid


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument(
        "--dataset", required=True, help="a registered dataset or one of the config's datasets.coco_json"
    )
    parser.add_argument("--output", required=True, help="PNG file to write")
    parser.add_argument("--num-images", type=positive_int, default=8)
    parser.add_argument("--score-threshold", type=unit_interval, default=0.5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    inputs = {"--config-file": args.config_file, "--weights": args.weights}
    refuse_overwriting_inputs({"--output": args.output}, inputs)
    check_config_file(args.config_file)
    cfg = LazyConfig.load(args.config_file)
    register_config_datasets(cfg)
    check_dataset_names(args.dataset, "--dataset")
    predictor = Predictor(cfg, args.weights, device=args.device)
    grid = draw_prediction_grid(predictor, args.dataset, args.num_images, args.score_threshold)
    buffer = io.BytesIO()
    Image.fromarray(grid).save(buffer, format="PNG")
    atomic_write(args.output, buffer.getvalue())
    print(f"Predictions on {args.num_images} images of {args.dataset} written to {args.output}")


def main(argv: list[str] | None = None) -> int:
    """Run the tool: user errors in one line (exit 2), Ctrl-C in one (exit 130), tracebacks with --debug."""
    return run_tool(run, argv, "draw_predictions.py")


if __name__ == "__main__":
    sys.exit(main())
