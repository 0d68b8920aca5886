"""Draws a model's predictions on dataset images with Detectron2's ``Visualizer`` into one PNG grid.

    python -m sparse_detr.engine.draw_predictions --config-file output/quickstart/config.yaml \\
        --weights output/quickstart/model_final.pth --dataset shapes_val --output predictions.png
"""
from __future__ import annotations

import argparse
import math

import numpy as np
from detectron2.config import LazyConfig
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.utils.visualizer import Visualizer
from PIL import Image

import sparse_detr.data  # noqa: F401  (registers the synthetic sets)
import sparse_detr.modeling  # noqa: F401

from .predictor import LazyConfigPredictor

__all__ = ["draw_prediction_grid"]


def draw_prediction_grid(
    predictor: LazyConfigPredictor,
    dataset: str,
    num_images: int = 8,
    score_threshold: float = 0.5,
    columns: int = 4,
) -> np.ndarray:
    """Predictions (score >= ``score_threshold``) on the first ``num_images`` images of ``dataset``.

    Returns:
        (rows * H, columns * W, 3) uint8 RGB grid; every tile is an image with its predicted boxes, classes
        and scores drawn by Detectron2's ``Visualizer``.
    """
    records = DatasetCatalog.get(dataset)[:num_images]
    metadata = MetadataCatalog.get(dataset)
    tiles = []
    for record in records:
        image = utils.read_image(record["file_name"], format="RGB")
        instances = predictor(image, image_format="RGB")["instances"].to("cpu")
        instances = instances[instances.scores >= score_threshold]
        tiles.append(Visualizer(image, metadata, scale=1.0).draw_instance_predictions(instances).get_image())
    height = max(t.shape[0] for t in tiles)
    width = max(t.shape[1] for t in tiles)
    rows = math.ceil(len(tiles) / columns)
    grid = np.full((rows * height, min(columns, len(tiles)) * width, 3), 255, dtype=np.uint8)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        grid[row * height:row * height + tile.shape[0], column * width:column * width + tile.shape[1]] = tile
    return grid


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--dataset", required=True, help="a registered dataset, e.g. shapes_val")
    parser.add_argument("--output", required=True, help="PNG file to write")
    parser.add_argument("--num-images", type=int, default=8)
    parser.add_argument("--score-threshold", type=float, default=0.5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    cfg = LazyConfig.load(args.config_file)
    predictor = LazyConfigPredictor(cfg, args.weights, device=args.device)
    grid = draw_prediction_grid(predictor, args.dataset, args.num_images, args.score_threshold)
    Image.fromarray(grid).save(args.output)
    print(f"Predictions on {args.num_images} images of {args.dataset} written to {args.output}")


if __name__ == "__main__":
    main()
