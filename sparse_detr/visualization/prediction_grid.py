"""A model's predictions on dataset images, drawn with Detectron2's ``Visualizer`` into one grid image."""

from __future__ import annotations

import math

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.utils.visualizer import Visualizer

__all__ = ["draw_prediction_grid"]


def draw_prediction_grid(
    predictor,
    dataset: str,
    num_images: int = 8,
    score_threshold: float = 0.5,
    columns: int = 4,
) -> np.ndarray:
    """Predictions (score >= ``score_threshold``) on the first ``num_images`` images of ``dataset``.

    ``predictor`` is a :class:`sparse_detr.Predictor` (BGR images, its default).

    Returns:
        (rows * H, columns * W, 3) uint8 RGB grid; every tile is an image with its predicted boxes, classes
        and scores drawn by Detectron2's ``Visualizer``, or the words "no detection with score >= T" when
        none passed the threshold.
    """
    records = DatasetCatalog.get(dataset)[:num_images]
    metadata = MetadataCatalog.get(dataset)
    tiles = []
    for record in records:
        image = utils.read_image(record["file_name"], format=predictor.image_format)
        instances = predictor(image, record["file_name"])["instances"].to("cpu")
        instances = instances[instances.scores >= score_threshold]
        rgb = image if predictor.image_format == "RGB" else image[:, :, ::-1]
        visualizer = Visualizer(rgb, metadata, scale=1.0)
        if len(instances) == 0:  # an empty tile would look like a drawing that failed
            visualizer.draw_text(
                f"no detection with score >= {score_threshold:g}", (image.shape[1] / 2, image.shape[0] / 2)
            )
        tiles.append(visualizer.draw_instance_predictions(instances).get_image())
    height = max(t.shape[0] for t in tiles)
    width = max(t.shape[1] for t in tiles)
    rows = math.ceil(len(tiles) / columns)
    grid = np.full((rows * height, min(columns, len(tiles)) * width, 3), 255, dtype=np.uint8)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        grid[row * height:row * height + tile.shape[0], column * width:column * width + tile.shape[1]] = tile
    return grid
