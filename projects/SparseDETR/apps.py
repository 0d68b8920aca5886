"""What the command-line tools of this folder share: images and model inputs, class counts, dataset entries
(the scripts run with this folder on ``sys.path``); predictions: ``sparse_detr.Predictor``; configs:
``sparse_detr.model_zoo.tool_configs``; class names: ``sparse_detr.data``.
"""

from __future__ import annotations

import glob
import logging
from pathlib import Path

import numpy as np
import torch

from sparse_detr.data.catalog import check_dataset_names
from sparse_detr.data.image_io import read_image

__all__ = [
    "num_model_classes",
    "expand_inputs",
    "read_image_or_none",
    "dataset_entries",
]

logger = logging.getLogger("sparse_detr.apps")  # under the tools' setup_logger(name="sparse_detr")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def num_model_classes(model: torch.nn.Module) -> int:
    """Number of logits of the model's class heads."""
    return model.heads.class_heads[0].out_features


def expand_inputs(patterns: list[str]) -> list[str]:
    """Files named by paths, directories (their image files) or glob patterns, in order, without repeats.

    A path that names nothing is kept, so that reading it reports it.
    """
    files = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            files += sorted(str(p) for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        elif any(c in pattern for c in "*?["):
            files += sorted(glob.glob(pattern, recursive=True))
        else:
            files.append(pattern)
    return list(dict.fromkeys(files))


def read_image_or_none(path: str) -> np.ndarray | None:
    """(H, W, 3) BGR uint8, or None (with a warning naming the file) when it cannot be read."""
    try:
        return read_image(path, format="BGR")
    except Exception as error:  # PIL raises several types for bad files; report any and go on
        logger.warning("skipping %s: cannot read it as an image (%s: %s)", path, type(error).__name__, error)
        return None


def dataset_entries(dataset: str, count: int) -> list[tuple[str, np.ndarray]]:
    """(name, BGR image) of the first ``count`` entries of a registered dataset."""
    from detectron2.data import DatasetCatalog

    check_dataset_names(dataset, "--dataset")
    entries = []
    for record in DatasetCatalog.get(dataset)[:count]:
        image = read_image_or_none(record["file_name"])
        if image is not None:
            entries.append((Path(record["file_name"]).stem, image))
    return entries


