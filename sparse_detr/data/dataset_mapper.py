"""Dataset mapper for DETR-style detectors: reads the image, augments it, builds the target ``Instances``.

Differences from Detectron2's ``DatasetMapper``, all as in the official DETR data pipeline:
crowd annotations are dropped, degenerate boxes (zero/negative width or height, non-finite coordinates) are
filtered, boxes emptied by a crop are removed, and images without any box are kept (they train the
"no object" class). An unreadable image raises :class:`UnreadableImageError` naming the file, or, with
``skip_unreadable_images=True`` (training only), is logged and skipped (the mapper returns ``None``).
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

__all__ = ["DetrDatasetMapper", "UnreadableImageError", "is_valid_annotation"]

logger = logging.getLogger(__name__)


class UnreadableImageError(OSError):
    """An image file is missing or cannot be decoded."""


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
            image_format: an image format supported by ``detection_utils.read_image`` ("BGR", "RGB", ...).
            skip_unreadable_images: in training, skip (with a warning) instead of failing on an unreadable
                image. Never applies at test time, where skipping would silently change the evaluation.
        """
        self.is_train = is_train
        self.augmentations = T.AugmentationList(list(augmentations))
        self.image_format = image_format
        self.skip_unreadable_images = skip_unreadable_images and is_train
        mode = "training" if is_train else "inference"
        logger.info(f"[DetrDatasetMapper] augmentations used in {mode}: {self.augmentations}")

    def _read_image(self, file_name: str) -> np.ndarray | None:
        try:
            return utils.read_image(file_name, format=self.image_format)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as error:
            message = f"Cannot read image file '{file_name}': {type(error).__name__}: {error}"
            if self.skip_unreadable_images:
                logger.warning(message + " (skipped because skip_unreadable_images=True)")
                return None
            raise UnreadableImageError(message) from error

    def __call__(self, dataset_dict: dict) -> dict | None:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = self._read_image(dataset_dict["file_name"])
        if image is None:
            return None
        utils.check_image_size(dataset_dict, image)

        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
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
