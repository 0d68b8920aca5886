#!/usr/bin/env python
"""Draw what Sparse DETR refines: selected tokens per level, top-k decoder queries, the DAM, and Corr.

    python projects/SparseDETR/visualize_tokens.py --config-file sparse_detr_r50_rho0.1_50ep \\
        --weights converted/model_final.pth --input photo.jpg --output out/tokens
    # side by side: the DAM scorer against the objectness scorer (one row per model)
    python projects/SparseDETR/visualize_tokens.py \\
        --config-file dam/config.yaml objectness/config.yaml --weights dam/model_final.pth \\
        objectness/model_final.pth --dataset coco_2017_val --num-images 4 --output out/compare

For each image one PNG (``OUTPUT/<name>_tokens.png``), laid out like the paper's appendix figures: per model
a row with the image and its top-k decoder queries (dots coloured by feature level) and confident
detections, the refined (selected) tokens of each of the 4 levels, the decoder attention map (DAM) as
an attention density, and the scorer's output on the finest level; titles give Corr (share of the
decoder's attention on the refined tokens) overall and per level.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from apps import dataset_entries, expand_inputs, num_model_classes, read_image_or_none
from output_names import unique_output_stems
from tqdm import tqdm

import sparse_detr.data  # noqa: F401  (registers the synthetic datasets and their metadata)
import sparse_detr.modeling  # noqa: F401  (registers the meta-architecture for yacs configs)
from sparse_detr.config.arguments import keep_ratio, positive_int, unit_interval
from sparse_detr.config.validation import check_option_order
from sparse_detr.data.catalog import class_names
from sparse_detr.engine.predictor import Predictor
from sparse_detr.model_zoo.tool_configs import config_label, load_tool_config
from sparse_detr.utils.cli import run_tool, setup_tool_logger
from sparse_detr.utils.files import refuse_overwriting_inputs
from sparse_detr.visualization.token_figure import analyze_image, draw_figure

logger = logging.getLogger("sparse_detr.visualize_tokens")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config-file",
        nargs="+",
        required=True,
        metavar="CONFIG",
        help="one config per model (files or model-zoo names); several = side by side",
    )
    parser.add_argument("--weights", nargs="+", help="checkpoint per config (default: the config's own)")
    parser.add_argument("--input", nargs="+", help="images, directories or glob patterns")
    parser.add_argument("--dataset", help="a registered dataset to take images from (instead of --input)")
    parser.add_argument("--num-images", type=positive_int, default=4, help="images taken from --dataset")
    parser.add_argument("--output", required=True, help="directory for the PNGs")
    parser.add_argument("--rho", type=keep_ratio, help="inference keeping ratio (dynamic sparsification)")
    parser.add_argument(
        "--top-k", type=positive_int, default=100, help="decoder queries drawn (highest-ranked first)"
    )
    parser.add_argument("--confidence-threshold", type=unit_interval, default=0.5, help="detections drawn")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for every model")
    return parser


def main(argv: list[str] | None = None) -> list[str]:
    """Write the figures; returns the written paths."""
    args = build_parser().parse_args(argv)
    usage = f"{Path(__file__).name} --config-file CONFIG [options]"
    check_option_order(args.opts, usage)  # before the other checks: a misplaced option looks absent
    if bool(args.input) == bool(args.dataset):
        raise SystemExit("give either --input or --dataset")
    weights = args.weights or [None] * len(args.config_file)
    if len(weights) != len(args.config_file):
        raise SystemExit(f"--weights: {len(weights)} given for {len(args.config_file)} --config-file")
    inputs = {f"--config-file {c}": c for c in args.config_file} | {f"--weights {w}": w for w in weights}
    if args.input:
        files = expand_inputs(args.input)
        stems = unique_output_stems(files, companions=("_tokens",))
        inputs |= {f"--input {p}": p for p in files}
        figures = {p: f"{stems[p]}_tokens.png" for p in files}
        outputs = {f"--output's {name}": Path(args.output) / name for name in figures.values()}
    else:
        outputs = {}
    refuse_overwriting_inputs({"--output's log.txt": Path(args.output) / "log.txt", **outputs}, inputs)
    setup_tool_logger(args.output)  # console and OUTPUT/log.txt
    models = []
    for config, weight in zip(args.config_file, weights):
        cfg = load_tool_config(config, args.opts, weight, args.device, usage)
        predictor = Predictor(cfg)
        if args.rho is not None:
            predictor.model.set_keep_ratio(args.rho)
        num_classes = num_model_classes(predictor.model)
        models.append(
            (
                config_label(config),
                predictor,
                class_names(cfg, num_classes),
            )
        )
    if args.dataset:
        images = dataset_entries(args.dataset, args.num_images)
    else:
        images = [(str(stems[p]), read_image_or_none(p)) for p in files]
        images = [(name, image) for name, image in images if image is not None]
    written = []
    for name, image_bgr in tqdm(images, desc="images"):
        try:
            views = [
                (label, analyze_image(p.model, p.model_input(image_bgr, name))) for label, p, _ in models
            ]
        except ValueError as error:  # an image the model cannot take: this image only
            logger.warning("skipping %s: %s", name, error)
            continue
        path = str(Path(args.output) / f"{name}_tokens.png")
        draw_figure(
            image_bgr[:, :, ::-1], views, path, args.top_k, [n for *_, n in models], args.confidence_threshold
        )
        written.append(path)
    print(f"wrote {len(written)} figure(s) to {args.output}")
    return written


if __name__ == "__main__":
    sys.exit(run_tool(main, None, "visualize_tokens.py"))
