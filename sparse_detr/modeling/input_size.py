"""The smallest image the model takes, from its feature strides.

Every conv of the backbone and the neck pads by half its kernel, so a level of stride ``s`` has
``ceil(H / s) x ceil(W / s)`` positions. An image no larger than the coarsest stride on both sides leaves
that level a single position: the level's GroupNorm then fails with "Expected more than 1 value per channel"
(for models with one channel per group, e.g. 32-d tokens) and the detections mean nothing. The check here
names the image, its size after resize and the minimum instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["check_image_size", "level_sizes", "level_strides", "minimum_image_side"]


def level_strides(backbone_strides: Sequence[int], num_levels: int) -> list[int]:
    """Strides of the neck's levels: the backbone maps', then twice the previous one per extra level."""
    strides = list(backbone_strides)
    while len(strides) < num_levels:
        strides.append(strides[-1] * 2)
    return strides


def level_sizes(height: int, width: int, strides: Sequence[int]) -> list[tuple[int, int]]:
    """(h, w) positions of each level for an (padded) input of ``height x width`` pixels."""
    return [(math.ceil(height / s), math.ceil(width / s)) for s in strides]


def minimum_image_side(strides: Sequence[int]) -> int:
    """Pixels a side needs so that the coarsest level has 2 positions along it (65 for strides 8 ... 64)."""
    return max(strides) + 1


def check_image_size(height: int, width: int, strides: Sequence[int], name: str = "image") -> None:
    """Raise ``ValueError`` if a ``height x width`` input leaves the coarsest level a single position.

    Args:
        height, width: the input's size as the model sees it (after the resize; a batch: its padded size).
        strides: the model's level strides (:func:`level_strides`).
        name: how the message calls the image (its file name, or the option that set its size).
    """
    coarsest = max(strides)
    if height > coarsest or width > coarsest:
        return
    minimum = minimum_image_side(strides)
    raise ValueError(
        f"{name}: {height}x{width} pixels (as the model sees it, after any resize) is too small for this "
        f"model: its coarsest feature level (stride {coarsest}, levels of strides {list(strides)}) would be "
        f"a single position (1x1). The model needs a side of at least {minimum} px (from "
        f"{minimum}x{minimum} on, every level is at least 2x2): resize to a larger size (e.g. "
        "dataloader.test.mapper.augmentations.min_size / INPUT.MIN_SIZE_TEST) or pad the image"
    )
