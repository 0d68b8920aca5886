"""Image files are read with their real range: 16-bit images scaled to 8 bits, float images refused."""
import numpy as np
import pytest
from PIL import Image

from sparse_detr.data.image_io import UnsupportedImageModeError, read_image


def test_16_bit_grayscale_png_is_scaled_not_saturated(tmp_path):
    values = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    path = tmp_path / "depth16.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    image = read_image(str(path), format="BGR")
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    expected = np.rint(values / 257.0)
    np.testing.assert_allclose(image[..., 0], expected, atol=1)
    assert (image[..., 0] == 255).mean() < 0.01  # not saturated


def test_32_bit_integer_image_in_16_bit_range_is_scaled(tmp_path):
    path = tmp_path / "int32.tif"
    Image.fromarray(np.full((8, 8), 65535, dtype=np.int32)).save(path)
    assert (read_image(str(path), format="RGB") == 255).all()
    Image.fromarray(np.full((8, 8), 1 << 20, dtype=np.int32)).save(path)
    with pytest.raises(UnsupportedImageModeError, match=r"int32\.tif.*16-bit range"):
        read_image(str(path), format="RGB")


def test_float_image_is_refused_by_name(tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.zeros((8, 8), dtype=np.float32)).save(path)
    with pytest.raises(UnsupportedImageModeError, match=r"float\.tif.*floating-point"):
        read_image(str(path), format="BGR")


def test_8_bit_images_read_as_detectron2_reads_them(tmp_path):
    from detectron2.data.detection_utils import read_image as d2_read_image

    path = tmp_path / "rgb.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(path)
    for fmt in ("BGR", "RGB"):
        np.testing.assert_array_equal(read_image(str(path), fmt), d2_read_image(str(path), fmt))
