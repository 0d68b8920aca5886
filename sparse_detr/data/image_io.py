"""Reading image files with their real value range.

Detectron2's ``read_image`` converts every PIL image with ``Image.convert("RGB")``, which clips 16-bit
grayscale images (PNG / TIFF modes ``I;16`` and ``I``) at 255: a 16-bit image reads back almost all white.
Here such images are scaled to 8 bits (the 16-bit range 0-65535 onto 0-255) before the conversion;
floating-point images (mode ``F``) have no defined range and are refused with the file's name.
Everything else (EXIF orientation, the channel order) is Detectron2's.
"""

from __future__ import annotations

import numpy as np
from detectron2.data import detection_utils
from detectron2.utils.file_io import PathManager
from PIL import Image

__all__ = ["UnsupportedImageModeError", "read_image", "to_8bit"]

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


class UnsupportedImageModeError(ValueError):
    """An image file whose pixel values cannot be mapped to 8 bits unambiguously."""


def to_8bit(image: Image.Image, file_name: str) -> Image.Image:
    """A PIL image with 8-bit channels: 16-bit modes scaled to 0-255, 8-bit modes unchanged.

    Raises:
        UnsupportedImageModeError: a floating-point image, or a 32-bit integer image with values outside
            the 16-bit range, naming ``file_name``.
    """
    if image.mode in _SIXTEEN_BIT_MODES or image.mode == "I":
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise UnsupportedImageModeError(
                f"Image file '{file_name}' has 32-bit integer pixels in [{values.min()}, {values.max()}], "
                "outside the 16-bit range; convert it to an 8-bit image"
            )
        scaled = np.rint(values * (255.0 / 65535.0)).astype(np.uint8)
        return Image.fromarray(scaled)  # mode "L"
    if image.mode == "F":
        raise UnsupportedImageModeError(
            f"Image file '{file_name}' has floating-point pixels (PIL mode 'F'), whose range is not defined; "
            "convert it to an 8-bit image"
        )
    return image


def read_image(file_name: str, format: str | None = None) -> np.ndarray:
    """``detectron2.data.detection_utils.read_image`` that reads 16-bit images with their real range.

    Args:
        file_name: image path (any ``PathManager`` path).
        format: "BGR", "RGB", or another format of Detectron2's ``read_image``.
    Returns:
        HWC uint8 array (see Detectron2's ``read_image``).
    """
    with PathManager.open(file_name, "rb") as f:
        image = Image.open(f)
        image = detection_utils._apply_exif_orientation(image)
        return detection_utils.convert_PIL_to_numpy(to_8bit(image, file_name), format)
