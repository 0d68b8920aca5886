"""Dataset mapper for DETR-style detectors: reads the image, augments it, builds the target ``Instances``.

Differences from Detectron2's ``DatasetMapper``, all as in the official DETR data pipeline:
crowd annotations are dropped, degenerate boxes (zero/negative width or height, non-finite coordinates) are
filtered, boxes emptied by a crop are removed, and images without any box are kept (they train the
"no object" class). 16-bit images are read with their real range (scaled to 8 bits). An image that cannot be
used (unreadable, or an aspect ratio the resize cannot handle) raises :class:`UnreadableImageError` naming
the file, or, with ``skip_unreadable_images=True`` (training only), is logged and skipped (the mapper
returns ``None``).
"""
from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import numpy as np
import torch
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from PIL import UnidentifiedImageError

from ..utils.input_checks import check_input_format
from .augmentations import ImageAugmentationError, apply_augmentations
from .image_io import read_image

__all__ = ["DetrDatasetMapper", "UnreadableImageError", "is_valid_annotation"]

logger = logging.getLogger(__name__)


class UnreadableImageError(OSError):
    """An image file is missing, cannot be decoded, or cannot be resized (extreme aspect ratio)."""


def is_valid_annotation(annotation: dict) -> bool:
    """Whether an annotation is a trainable box: not crowd, finite, positive width and height."""
    if annotation.get("iscrowd", 0) != 0:
        return False
    box = np.asarray(
        BoxMode.convert(list(annotation["bbox"]), annotation["bbox_mode"], BoxMode.XYXY_ABS), dtype=np.float64
    )
    return bool(np.isfinite(box).all() and box[2] > box[0] and box[3] > box[1])


class DetrDatasetMapper:
    """Maps a Detectron2 dataset dict to the model's input dict.

    Output keys: ``image`` (uint8 tensor (3, H, W) in ``image_format`` channel order), ``height``/``width``
    (the original size, used to rescale predictions), and in training ``instances`` with ``gt_boxes``
    (XYXY, pixels of the augmented image) and ``gt_classes`` (N may be 0).
    """

    def __init__(
        self,
        is_train: bool,
        augmentations: Sequence[T.Augmentation | T.Transform],
        image_format: str = "BGR",
        skip_unreadable_images: bool = False,
    ):
        """
        Args:
            is_train: whether targets are built (and annotations kept).
            augmentations: applied in order (see :mod:`sparse_detr.data.augmentations`).
            image_format: "BGR" or "RGB", the model's ``input_format``.
            skip_unreadable_images: in training, skip (with a warning) instead of failing on an unreadable
                or unusable image. Never applies at test time, where skipping would silently change the
                evaluation.
        """
        self.is_train = is_train
        self.augmentations = T.AugmentationList(list(augmentations))
        self.image_format = check_input_format(image_format, "DetrDatasetMapper image_format")
        self.skip_unreadable_images = skip_unreadable_images and is_train
        mode = "training" if is_train else "inference"
        logger.info(f"[DetrDatasetMapper] augmentations used in {mode}: {self.augmentations}")

    def _unusable(self, message: str, error: Exception) -> None:
        """Log and return (skip) or raise, as ``skip_unreadable_images`` says."""
        if self.skip_unreadable_images:
            logger.warning(message + " (skipped because skip_unreadable_images=True)")
            return None
        raise UnreadableImageError(message) from error

    def _read_image(self, file_name: str) -> np.ndarray | None:
        try:
            return read_image(file_name, format=self.image_format)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
            message = f"Cannot read image file '{file_name}': {type(error).__name__}: {error}"
            return self._unusable(message, error)

    def __call__(self, dataset_dict: dict) -> dict | None:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = self._read_image(dataset_dict["file_name"])
        if image is None:
            return None
        utils.check_image_size(dataset_dict, image)

        try:
            source = f"file '{dataset_dict['file_name']}'"
            image, transforms = apply_augmentations(self.augmentations, image, source)
        except ImageAugmentationError as error:
            return self._unusable(str(error), error)
        image_shape = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))

        annotations = dataset_dict.pop("annotations", None)
        if not self.is_train:
            return dataset_dict
        kept = []
        for annotation in annotations or []:
            if not is_valid_annotation(annotation):
                continue
            annotation = {k: v for k, v in annotation.items() if k not in ("segmentation", "keypoints")}
            kept.append(utils.transform_instance_annotations(annotation, transforms, image_shape))
        instances = utils.annotations_to_instances(kept, image_shape)
        dataset_dict["instances"] = utils.filter_empty_instances(instances)
        return dataset_dict
