"""The inputs an exported graph is valid for: recorded in its ONNX metadata, checked before a run.

A graph runs on whatever it is fed: ``keep_ratio`` 0 or 1e-9 keeps one token, 2 the dense result, NaN fails
deep inside TopK; an image below the minimum size or full of NaN gives confident nonsense. The exporter
records the domain (``sparse_detr.keep_ratio_range`` "(0, 1]", ``sparse_detr.min_image_size``,
``sparse_detr.token_strides``) and :func:`check_image` / :func:`check_keep_ratio` refuse inputs outside it by
name; the runtime helpers (:mod:`.runtimes`) call them before every run.

Valid inputs:

- ``image``: Float[3, H, W] (a numpy array or torch tensor, float32 or convertible), 3 channels first,
  H, W >= ``min_image_size`` (65: the stride-64 level is at least 2 x 2), every value finite.
- ``keep_ratio``: a finite number in (0, 1] that keeps at least one whole token of the image:
  ``keep_ratio * N(H, W) >= 1``, where the token count N sums ceil(H / s) * ceil(W / s) over the
  token strides (8, 16, 32, 64 for the paper's models). A smaller ratio would silently be rounded up to one
  token.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from sparse_detr.modeling.input_size import level_sizes
from sparse_detr.utils.keep_ratio import KEEP_RATIO_RANGE
from sparse_detr.utils.keep_ratio import check_keep_ratio as keep_ratio_in_domain

__all__ = [
    "KEEP_RATIO_RANGE",
    "domain_metadata",
    "check_image",
    "check_keep_ratio",
]


def domain_metadata(model) -> dict[str, str]:
    """The inputs' domain beyond the minimum size: the keep-ratio range and the levels' token strides."""
    return {
        "sparse_detr.keep_ratio_range": KEEP_RATIO_RANGE,
        "sparse_detr.token_strides": json.dumps(model.level_strides),
    }


def _as_array(image: Any) -> np.ndarray:
    if hasattr(image, "detach"):  # a torch tensor
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise ValueError(
            f"image must be a Float[3, H, W] numpy array or torch tensor, got {type(image).__name__}"
        )
    return image


def check_image(image: Any, min_image_size: int, name: str = "image") -> np.ndarray:
    """``image`` as a contiguous float32 [3, H, W] array, or ValueError naming what is wrong with it."""
    array = _as_array(image)
    if array.ndim != 3 or array.shape[0] != 3:
        raise ValueError(
            f"{name} must have shape (3, H, W) (channels first, the model's channel order, 0-255), got "
            f"shape {tuple(array.shape)}" + (" (H x W x 3? transpose it to 3 x H x W)" if array.ndim == 3
                                             and array.shape[-1] == 3 else "")
        )
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} must hold real numbers (0-255), got dtype {array.dtype}")
    height, width = array.shape[1:]
    if min(height, width) < min_image_size:
        raise ValueError(
            f"{name} is {height} x {width}: below the graph's minimum size {min_image_size} x "
            f"{min_image_size} "
            "(metadata sparse_detr.min_image_size; resize it as the model's test resize does)"
        )
    array = np.ascontiguousarray(array, dtype=np.float32)
    finite = np.isfinite(array)
    if not finite.all():
        bad = int(array.size - finite.sum())
        raise ValueError(f"{name} holds {bad} of {array.size} values that are NaN or infinite")
    return array


def check_keep_ratio(keep_ratio: Any, height: int, width: int, strides: list[int]) -> np.ndarray:
    """``keep_ratio`` as a float32 scalar array, or ValueError naming the value and the valid domain."""
    value = keep_ratio_in_domain(keep_ratio, "keep_ratio")
    tokens = sum(h * w for h, w in level_sizes(height, width, strides))
    if value * tokens < 1.0:
        raise ValueError(
            f"keep_ratio {value:g} keeps less than one of the {tokens} tokens of a {height} x {width} image "
            f"(the graph would silently keep 1); the smallest for this size is 1/{tokens} = {1 / tokens:.3g}"
        )
    return np.array(value, dtype=np.float32)
