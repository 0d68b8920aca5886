"""Checks of what reaches the model: images handed to predictors and the model's ``batched_inputs``.

Wrong images do not fail on their own: a float image in [0, 1] or a 16-bit image runs through the network
and gives wrong boxes, a 4-channel or 2-D array fails deep inside torch. These checks name what was given
and what is expected instead.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = [
    "SUPPORTED_INPUT_FORMATS",
    "check_image_array",
    "check_input_format",
    "check_model_inputs",
    "pixel_values_unchecked",
    "tracing",
]

SUPPORTED_INPUT_FORMATS = ("RGB", "BGR")
logger = logging.getLogger(__name__)
_unit_range_warned = False  # the [0, 1] warning is given once per process
_check_pixel_values = True


@contextlib.contextmanager
def pixel_values_unchecked() -> Iterator[None]:
    """Inside the block, float inputs may hold any finite values (not only [0, 255]).

    For inputs that are not images: reference tensors of another implementation fed through the model
    (e.g. un-normalised random tensors of an official test fixture). Shapes and NaN/inf are still checked.
    """
    global _check_pixel_values
    previous, _check_pixel_values = _check_pixel_values, False
    try:
        yield
    finally:
        _check_pixel_values = previous

INPUT_FORMAT_KEYS = "model.input_format (LazyConfig) / INPUT.FORMAT (yacs)"


def check_input_format(input_format: Any, key: str = INPUT_FORMAT_KEYS) -> str:
    """Return ``input_format`` if it is a channel order the model accepts ("RGB" or "BGR"), else raise."""
    if input_format not in SUPPORTED_INPUT_FORMATS:
        raise ValueError(
            f"{key} must be one of {list(SUPPORTED_INPUT_FORMATS)} (the channel order of the 3-channel "
            f"uint8 images the model takes), got {input_format!r}"
        )
    return input_format


def _describe(image: Any) -> str:
    if image is None:
        return "None (e.g. cv2.imread could not read the file)"
    if isinstance(image, (np.ndarray, torch.Tensor)):
        return f"a {type(image).__name__} of shape {tuple(image.shape)} and dtype {image.dtype}"
    return f"a {type(image).__name__}"


def check_image_array(image: Any, input_format: str, name: str = "image") -> np.ndarray:
    """Raise ``ValueError`` unless ``image`` is an H x W x 3 uint8 numpy array with H, W > 0.

    Args:
        image: what a caller handed to a predictor.
        input_format: the channel order the caller declared (named in the message).
        name: how the message calls the image (e.g. its file name).
    """
    expected = (
        f"expected an H x W x 3 uint8 numpy array in {input_format} channel order "
        "(as cv2.imread or detectron2.data.detection_utils.read_image return)"
    )
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name}: {expected}, got {_describe(image)}")
    if image.ndim != 3 or image.shape[2] != 3:
        hint = ""
        if image.ndim == 2:
            hint = " (a grayscale image: convert it to 3 channels)"
        elif image.ndim == 3 and image.shape[2] == 4:
            hint = " (an image with alpha: drop the 4th channel)"
        elif image.ndim == 3 and image.shape[0] == 3:
            hint = " (channels first: transpose it to H x W x 3)"
        raise ValueError(f"{name}: {expected}, got {_describe(image)}{hint}")
    if image.dtype != np.uint8:
        hint = ""
        if np.issubdtype(image.dtype, np.floating):
            hint = " (a float image: scale it to 0-255 and convert with .astype(np.uint8))"
        elif np.issubdtype(image.dtype, np.integer):
            hint = " (a 16-bit or wider image: scale it to 8 bits, e.g. (image >> 8).astype(np.uint8))"
        raise ValueError(f"{name}: {expected}, got {_describe(image)}{hint}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{name}: {expected}, got an empty image of shape {tuple(image.shape)}")
    return image


def tracing() -> bool:
    """Whether the model is being traced / compiled / exported (value checks would break the graph)."""
    compiler = getattr(torch, "compiler", None)
    compiling = compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling()
    return bool(torch.jit.is_tracing() or compiling or torch.onnx.is_in_onnx_export())


def check_model_inputs(batched_inputs: Any) -> None:
    """Raise ``ValueError`` naming the input unless every ``batched_inputs[i]["image"]`` is a model image.

    A model image is a (3, H, W) tensor with H, W > 0, uint8 or floating point with finite values in
    [0, 255] (the model normalises with pixel means in that scale). A floating-point image whose values all
    lie in [0, 1] is most likely scaled to [0, 1] by mistake: a warning says so (once per process).
    Only floating-point images have their values read (one device sync each; not while the model is traced,
    compiled or exported); uint8 images cost nothing.
    """
    if not isinstance(batched_inputs, (list, tuple)) or len(batched_inputs) == 0:
        raise ValueError(
            "batched_inputs: expected a non-empty list of dicts with 'image', got "
            f"{_describe(batched_inputs)}"
        )
    for i, item in enumerate(batched_inputs):
        name = f"batched_inputs[{i}]['image']"
        if not isinstance(item, dict) or "image" not in item:
            raise ValueError(
                f"batched_inputs[{i}]: expected a dict with an 'image' tensor, got {_describe(item)}"
            )
        image = item["image"]
        expected = "expected a (3, H, W) tensor in the model's input format, values in [0, 255]"
        if not isinstance(image, torch.Tensor):
            raise ValueError(f"{name}: {expected}, got {_describe(image)}")
        if image.dim() != 3 or image.shape[0] != 3:
            channels_last = image.dim() == 3 and image.shape[-1] == 3
            hint = " (channels last: permute it to (3, H, W))" if channels_last else ""
            raise ValueError(f"{name}: {expected}, got shape {tuple(image.shape)}{hint}")
        if image.shape[1] == 0 or image.shape[2] == 0:
            raise ValueError(f"{name}: {expected}, got an empty image of shape {tuple(image.shape)}")
        if image.dtype == torch.uint8:
            continue
        if not image.is_floating_point():
            raise ValueError(f"{name}: {expected} as uint8 or float, got dtype {image.dtype}")
        if tracing():  # values are data, not known while a graph is traced or exported
            continue
        low, high = (float(v) for v in torch.aminmax(image.detach().float()))
        if not (np.isfinite(low) and np.isfinite(high)):
            raise ValueError(f"{name}: {expected}, got NaN/inf values")
        if not _check_pixel_values:
            continue
        if low < 0 or high > 255:
            raise ValueError(
                f"{name}: {expected}, got values in [{low:g}, {high:g}] (a 16-bit image, or one already "
                "normalised? the model normalises 0-255 pixels itself)"
            )
        global _unit_range_warned
        if high <= 1.0 and not _unit_range_warned:
            _unit_range_warned = True
            logger.warning(
                f"{name}: all values lie in [0, 1]; the model expects 0-255 pixels. Was the image scaled "
                "to [0, 1]? Predictions on such images are wrong. (This warning is shown once.)"
            )
