"""The DETR / Deformable DETR augmentations as Detectron2 ``Augmentation`` objects.

Training (Deformable DETR's ``make_coco_transforms("train")``)::

    horizontal flip (p = 0.5), then one of (b with probability ``crop_probability``, default 0.5)
      a) resize the shorter side to a random choice of ``min_sizes`` (longer side <= ``max_size``)
      b) resize the shorter side to a random choice of ``crop_resize_sizes``, crop a random
         (h, w) with h, w uniform in ``crop_size`` (clipped to the image), then as a)

Test: resize the shorter side to ``test_min_size`` (longer side <= ``max_size``).
All sizes are in pixels and configurable, so that small-image set-ups (the quickstart) use the same recipe.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
from detectron2.data import transforms as T

__all__ = [
    "COCO_MIN_SIZES",
    "ImageAugmentationError",
    "RandomChoice",
    "apply_augmentations",
    "build_detr_test_augmentations",
    "build_detr_train_augmentations",
]

COCO_MIN_SIZES = tuple(range(480, 801, 32))


class RandomChoice(T.Augmentation):
    """Apply one of several augmentations, chosen at random (DETR's ``RandomSelect``)."""

    def __init__(self, choices: Sequence[T.Augmentation], probabilities: Sequence[float] | None = None):
        """
        Args:
            choices: the alternatives: augmentations, transforms, or lists of them (applied in order).
            probabilities: one per choice, summing to 1 (default: uniform).
        """
        super().__init__()
        if len(choices) == 0:
            raise ValueError("RandomChoice needs at least one choice")
        self.choices = [T.AugmentationList(list(c) if isinstance(c, (list, tuple)) else [c]) for c in choices]
        if probabilities is None:
            probabilities = [1.0 / len(choices)] * len(choices)
        if len(probabilities) != len(choices) or not np.isclose(sum(probabilities), 1.0):
            raise ValueError(
                f"RandomChoice: probabilities {list(probabilities)} must be one per choice and sum to 1"
            )
        self.probabilities = np.asarray(probabilities, dtype=np.float64)

    def __call__(self, aug_input) -> T.Transform:
        chosen = self.choices[np.random.choice(len(self.choices), p=self.probabilities)]
        return chosen(aug_input)

    def __repr__(self):
        return f"RandomChoice(choices={self.choices}, probabilities={self.probabilities.tolist()})"


def _check_sizes(name: str, sizes: Sequence[int]) -> tuple[int, ...]:
    sizes = tuple(int(s) for s in sizes)
    if not sizes or min(sizes) <= 0:
        raise ValueError(f"{name} must be a non-empty list of positive sizes, got {sizes}")
    return sizes


def build_detr_train_augmentations(
    min_sizes: Sequence[int] = COCO_MIN_SIZES,
    max_size: int = 1333,
    crop_resize_sizes: Sequence[int] = (400, 500, 600),
    crop_size: tuple[int, int] = (384, 600),
    horizontal_flip: bool = True,
    crop_probability: float = 0.5,
) -> list[T.Augmentation]:
    """The training augmentations (see the module docstring); defaults are the paper's COCO values."""
    min_sizes = _check_sizes("min_sizes", min_sizes)
    crop_resize_sizes = _check_sizes("crop_resize_sizes", crop_resize_sizes)
    if len(crop_size) != 2 or not 0 < crop_size[0] <= crop_size[1]:
        raise ValueError(f"crop_size must be (min, max) with 0 < min <= max, got {crop_size}")
    multi_scale = T.ResizeShortestEdge(min_sizes, max_size=max_size, sample_style="choice")
    resize_crop_resize = [
        T.ResizeShortestEdge(crop_resize_sizes, max_size=sys.maxsize, sample_style="choice"),
        T.RandomCrop("absolute_range", tuple(crop_size)),
        T.ResizeShortestEdge(min_sizes, max_size=max_size, sample_style="choice"),
    ]
    augmentations: list[T.Augmentation] = [T.RandomFlip(horizontal=True)] if horizontal_flip else []
    if not 0.0 <= crop_probability <= 1.0:
        raise ValueError(f"crop_probability must be in [0, 1], got {crop_probability}")
    probabilities = [1.0 - crop_probability, crop_probability]
    augmentations.append(RandomChoice([multi_scale, resize_crop_resize], probabilities=probabilities))
    return augmentations


def build_detr_test_augmentations(min_size: int = 800, max_size: int = 1333) -> list[T.Augmentation]:
    """The test-time resize: shorter side ``min_size``, longer side at most ``max_size``."""
    return [T.ResizeShortestEdge(int(min_size), max_size=max_size)]


class ImageAugmentationError(ValueError):
    """An image that the augmentations cannot process (e.g. an aspect ratio that resizes a side to 0)."""


def apply_augmentations(
    augmentations: T.AugmentationList, image: np.ndarray, source: str
) -> tuple[np.ndarray, T.TransformList]:
    """Run ``augmentations`` on ``image``; a failure or an empty result raises naming ``source``.

    An image of extreme aspect ratio (above about 2 x max_size : 1) is resized to a side of 0 pixels, which
    PIL refuses with "height and width must be > 0"; here the message names the image, its size and the
    cause.

    Returns:
        (augmented image, the applied transforms).
    """
    aug_input = T.AugInput(image)
    height, width = image.shape[:2]
    try:
        transforms = augmentations(aug_input)
    except Exception as error:  # the augmentations raise various types; all mean "this image cannot be used"
        raise ImageAugmentationError(
            f"Image {source} ({height} x {width} pixels, aspect ratio {_aspect(height, width)}) cannot be "
            f"augmented / resized: {type(error).__name__}: {error}"
        ) from error
    out_height, out_width = aug_input.image.shape[:2]
    if out_height == 0 or out_width == 0:
        raise ImageAugmentationError(
            f"Image {source} ({height} x {width} pixels, aspect ratio {_aspect(height, width)}) is resized "
            f"to {out_height} x {out_width}: its aspect ratio is too extreme for the resize"
        )
    return aug_input.image, transforms


def _aspect(height: int, width: int) -> str:
    if min(height, width) == 0:
        return "undefined (a side is 0)"
    return f"{max(height, width) / min(height, width):.0f}:1"
