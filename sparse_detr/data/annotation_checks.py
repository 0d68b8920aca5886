"""Checks of a dataset's annotations before a model is built for it.

Without them an invalid or empty json fails with a bare ``JSONDecodeError`` after the model is built, boxes
with NaN/inf coordinates or entirely outside their image are dropped without a word by the mapper, a label
beyond the model's classes shows up only when a batch happens to hold one, duplicate category ids end in a
bare ``AssertionError`` of ``COCOEvaluator`` after training, and a training set without a single box trains
to AP nan. Here the dataset is loaded up front: a broken annotation file is named, dropped boxes are counted
per dataset (a warning), duplicate category ids are refused, the dataset's categories are checked against
the model's number of classes, and a training set with no box to learn from is refused.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

__all__ = [
    "AnnotationCounts",
    "AnnotationError",
    "check_annotated_boxes",
    "check_dataset_annotations",
    "check_unique_category_ids",
    "duplicate_category_ids",
    "load_dataset_dicts",
]

logger = logging.getLogger(__name__)


class AnnotationError(ValueError):
    """A dataset's annotation file cannot be used."""


@dataclass(frozen=True)
class AnnotationCounts:
    """What one dataset holds: images, non-crowd boxes, and the boxes of those the training drops."""

    dataset: str
    num_images: int
    num_boxes: int
    num_dropped: int
    dicts: list[dict] = field(default_factory=list, repr=False, compare=False)  # as loaded

    @property
    def num_trainable(self) -> int:
        return self.num_boxes - self.num_dropped


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


def _box_problem(annotation: dict, record: dict) -> str | None:
    """ "non-finite" / "empty" / "outside" for a box the training drops, else None."""
    try:
        box = BoxMode.convert(list(annotation["bbox"]), annotation["bbox_mode"], BoxMode.XYXY_ABS)
        box = np.asarray(box, dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        return "non-finite"
    if box.shape != (4,) or not np.isfinite(box).all():
        return "non-finite"
    if box[2] <= box[0] or box[3] <= box[1]:
        return "empty"
    if _outside_image(box, record.get("width"), record.get("height")):
        return "outside"
    return None


def _outside_image(box: np.ndarray, width, height) -> bool:
    """Whether an XYXY box has no area inside its (width x height) image: the mapper clips boxes to the
    image, which leaves such a box empty, and drops it."""
    if width is None or height is None:
        return False
    return bool(box[2] <= 0 or box[3] <= 0 or box[0] >= width or box[1] >= height)


def duplicate_category_ids(categories: Sequence[dict]) -> dict[int, list[str]]:
    """Category id -> the names listed under it, for each id that a COCO ``categories`` list repeats."""
    names: dict[int, list[str]] = {}
    for category in categories:
        names.setdefault(category.get("id"), []).append(str(category.get("name")))
    return {cid: listed for cid, listed in names.items() if len(listed) > 1}


def check_unique_category_ids(name: str, config_key: str) -> None:
    """Refuse a loaded COCO-format dataset whose json lists a category id more than once.

    Detectron2 then maps fewer ids than it lists classes (the classes are no longer one per label), and
    ``COCOEvaluator`` fails with a bare ``AssertionError`` after the training. The loaded metadata tells
    (``thing_classes`` longer than ``thing_dataset_id_to_contiguous_id``), without reading the json again;
    as the ids are sorted, each contiguous index without an id of its own belongs to the next mapped id.
    """
    metadata = MetadataCatalog.get(name)
    classes = metadata.get("thing_classes") or []
    id_map = metadata.get("thing_dataset_id_to_contiguous_id") or {}
    if not id_map or len(id_map) == len(classes):
        return
    by_index = {index: cid for cid, index in id_map.items()}
    unmapped = [index for index in range(len(classes)) if index not in by_index]
    repeated = sorted({by_index[min(i for i in by_index if i > index)] for index in unmapped})
    raise AnnotationError(
        f"Dataset {name!r} ({config_key}): its annotation file {metadata.get('json_file')!r} lists category "
        f"id(s) {repeated} more than once ({len(classes)} categories, {len(id_map)} distinct ids). Each "
        "category needs an id of its own: labels, class names and COCOEvaluator map one id to one class"
    )


def check_annotated_boxes(counts: Sequence[AnnotationCounts], config_key: str, training: bool) -> None:
    """Refuse training datasets without one box the training keeps; warn about such test datasets.

    A training set without boxes (an empty ``annotations`` list, or every box dropped) teaches only the
    "no object" class: the run exits 0 and its evaluation reads AP nan. A test set without boxes gives
    AP nan as well (nothing to match), which a warning says before the run.
    """
    if not counts or sum(c.num_trainable for c in counts) > 0:
        return
    described = "; ".join(
        f"{c.dataset!r}: {c.num_images} images, {c.num_boxes} boxes"
        + (f", all {c.num_dropped} dropped (see the warnings above)" if c.num_dropped else "")
        for c in counts
    )
    if training:
        raise AnnotationError(
            f"The training data ({config_key}) holds no box to learn from ({described}): the model would "
            "learn only 'no object' and evaluate to AP nan. Check the annotation file's 'annotations' (their "
            "image_id must match the images' ids, their bbox [x, y, width, height] must lie in the image)"
        )
    logger.warning(
        f"The test data ({config_key}) holds no annotated box ({described}): its COCO AP will be nan"
    )


def check_dataset_annotations(
    names: str | Iterable[str], config_key: str, num_classes: int | None = None
) -> list[AnnotationCounts]:
    """Load each dataset, name a broken annotation file, count dropped boxes, check category ids and labels.

    Args:
        names: dataset names (as in ``dataloader.*.dataset.names``).
        config_key: the config key that names them (used in messages).
        num_classes: the model's number of classes (``model.heads.num_classes``); it must equal the number
            of the dataset's categories (its labels are contiguous category indices). None skips that check.
    Returns:
        each dataset's :class:`AnnotationCounts` (for :func:`check_annotated_boxes`), with its dicts.
    Raises:
        AnnotationError: unreadable annotation file, duplicate category ids, or a number of categories other
            than the model's classes.
    """
    names = [names] if isinstance(names, str) else list(names)
    summaries = []
    for name in names:
        dicts = load_dataset_dicts(name, config_key)
        check_unique_category_ids(name, config_key)
        counts = {"non-finite": 0, "empty": 0, "outside": 0}
        num_boxes, max_label = 0, -1
        for record in dicts:
            for annotation in record.get("annotations", ()):
                if annotation.get("iscrowd", 0):
                    continue
                num_boxes += 1
                problem = _box_problem(annotation, record)
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
        if counts["outside"]:
            logger.warning(
                f"Dataset {name!r}: {counts['outside']} of {num_boxes} boxes lie entirely outside their "
                "image (beyond its width or height, or at negative coordinates); training drops them"
            )
        summaries.append(AnnotationCounts(name, len(dicts), num_boxes, sum(counts.values()), dicts))
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
    return summaries
