"""Checks of a dataset's annotations before a model is built for it.

Without them an invalid or empty json fails with a bare ``JSONDecodeError`` after the model is built, boxes
with NaN/inf coordinates are dropped without a word by the mapper, and a label beyond the model's classes
shows up only when a batch happens to hold one. Here the dataset is loaded up front: a broken annotation file
is named, dropped boxes are counted per dataset (a warning), and the dataset's categories are checked
against the model's number of classes.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

__all__ = ["AnnotationError", "check_dataset_annotations", "load_dataset_dicts"]

logger = logging.getLogger(__name__)


class AnnotationError(ValueError):
    """A dataset's annotation file cannot be used."""


def load_dataset_dicts(name: str, config_key: str) -> list[dict]:
    """``DatasetCatalog.get(name)``, with a broken annotation file named instead of a bare parser error."""
    json_file = MetadataCatalog.get(name).get("json_file")
    where = f"Dataset {name!r} ({config_key})"
    local = json_file and "://" not in str(json_file) and os.path.isfile(json_file)
    if local and os.path.getsize(json_file) == 0:
        raise AnnotationError(f"{where}: its annotation file {json_file!r} is empty (0 bytes)")
    try:
        return DatasetCatalog.get(name)
    except json.JSONDecodeError as error:
        raise AnnotationError(
            f"{where}: its annotation file {json_file!r} is not valid JSON ({error})"
        ) from error
    except (KeyError, TypeError, AssertionError, IndexError) as error:
        if not json_file:
            raise
        raise AnnotationError(
            f"{where}: its annotation file {json_file!r} is not a COCO-format detection file "
            f"({type(error).__name__}: {error}); it needs 'images', 'annotations' and 'categories'"
        ) from error


def _box_problem(annotation: dict) -> str | None:
    """ "non-finite" / "empty" for a box the training drops, else None."""
    try:
        box = BoxMode.convert(list(annotation["bbox"]), annotation["bbox_mode"], BoxMode.XYXY_ABS)
        box = np.asarray(box, dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        return "non-finite"
    if box.shape != (4,) or not np.isfinite(box).all():
        return "non-finite"
    if box[2] <= box[0] or box[3] <= box[1]:
        return "empty"
    return None


def check_dataset_annotations(
    names: str | Iterable[str], config_key: str, num_classes: int | None = None
) -> list[list[dict]]:
    """Load each dataset, name a broken annotation file, count dropped boxes, check labels.

    Args:
        names: dataset names (as in ``dataloader.*.dataset.names``).
        config_key: the config key that names them (used in messages).
        num_classes: the model's number of classes (``model.heads.num_classes``); it must equal the number
            of the dataset's categories (its labels are contiguous category indices). None skips that check.
    Returns:
        the dataset dicts of each name, in order.
    Raises:
        AnnotationError: unreadable annotation file, or a number of categories other than the model's classes.
    """
    names = [names] if isinstance(names, str) else list(names)
    loaded = []
    for name in names:
        dicts = load_dataset_dicts(name, config_key)
        loaded.append(dicts)
        counts = {"non-finite": 0, "empty": 0}
        num_boxes, max_label = 0, -1
        for record in dicts:
            for annotation in record.get("annotations", ()):
                if annotation.get("iscrowd", 0):
                    continue
                num_boxes += 1
                problem = _box_problem(annotation)
                if problem:
                    counts[problem] += 1
                max_label = max(max_label, int(annotation.get("category_id", -1)))
        if counts["non-finite"]:
            logger.warning(
                f"Dataset {name!r}: {counts['non-finite']} of {num_boxes} boxes have NaN/inf coordinates; "
                "training drops them"
            )
        if counts["empty"]:
            logger.warning(
                f"Dataset {name!r}: {counts['empty']} of {num_boxes} boxes have zero or negative width or "
                "height; training drops them"
            )
        if num_classes is None:
            continue
        classes = MetadataCatalog.get(name).get("thing_classes") or []
        needed = max(len(classes), max_label + 1)
        shown = (
            f" ({', '.join(map(str, classes[:5]))}{', ...' if len(classes) > 5 else ''})" if classes else ""
        )
        if needed > num_classes:
            raise AnnotationError(
                f"Dataset {name!r} ({config_key}) has {needed} categories{shown}, labels up to {max_label}, "
                f"but the model has model.heads.num_classes={num_classes}: set "
                f"model.heads.num_classes={needed} (MODEL.SPARSE_DETR.NUM_CLASSES for yacs configs)"
            )
        if classes and num_classes > needed:
            raise AnnotationError(
                f"Dataset {name!r} ({config_key}) has {needed} categories{shown}, but the model has "
                f"model.heads.num_classes={num_classes}: set model.heads.num_classes={needed} "
                "(MODEL.SPARSE_DETR.NUM_CLASSES for yacs configs). The labels here are Detectron2's "
                f"contiguous indices 0..{needed - 1} of the categories sorted by id, not the ids, so "
                "DETR's habit num_classes = max category id + 1 does not apply; extra classes would "
                "only fail the evaluation after the whole schedule ('A prediction has class=..., but "
                f"the dataset only has {needed} classes')."
            )
    return loaded
