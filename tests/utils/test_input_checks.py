"""What reaches the model: bad images are named with what was expected, float [0, 1] images warned about."""
import logging

import pytest
import torch
from detectron2.config import instantiate

from sparse_detr.utils import input_checks
from sparse_detr.utils.input_checks import check_input_format, check_model_inputs
from tests.helpers.tiny_sparse_detr import build_tiny_model, tiny_model_config


@pytest.fixture(scope="module")
def model():
    return build_tiny_model().eval()


@pytest.mark.parametrize(
    "image, message",
    [
        (torch.zeros(4, 32, 32), r"batched_inputs\[0\]\['image'\].*got shape \(4, 32, 32\)"),
        (torch.zeros(32, 32, 3), r"channels last"),
        (torch.zeros(32, 32), r"got shape \(32, 32\)"),
        (torch.zeros(3, 0, 32), r"empty image"),
        (torch.full((3, 32, 32), 300.0), r"values in \[300, 300\]"),
        (torch.full((3, 32, 32), -1.0), r"values in \[-1, -1\]"),
        (torch.full((3, 32, 32), float("nan")), r"NaN/inf"),
        (torch.zeros(3, 32, 32, dtype=torch.int16), r"dtype torch.int16"),
        (None, r"got None"),
    ],
)
def test_unfit_images_are_refused_by_name(model, image, message):
    with pytest.raises(ValueError, match=message):
        model([{"image": image, "height": 32, "width": 32}])


def test_not_a_list_of_dicts_is_refused():
    with pytest.raises(ValueError, match="non-empty list"):
        check_model_inputs([])
    with pytest.raises(ValueError, match=r"batched_inputs\[1\]: expected a dict"):
        check_model_inputs([{"image": torch.zeros(3, 4, 4, dtype=torch.uint8)}, torch.zeros(3, 4, 4)])


def test_float_image_in_unit_range_warns_once(model, caplog, monkeypatch):
    monkeypatch.setattr(input_checks, "_unit_range_warned", False)
    with caplog.at_level(logging.WARNING, logger="sparse_detr.utils.input_checks"):
        model([{"image": torch.rand(3, 96, 96) * 255, "height": 96, "width": 96}])
        assert not caplog.records
        for _ in range(2):
            model([{"image": torch.rand(3, 96, 96), "height": 96, "width": 96}])
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "all values lie in [0, 1]" in warnings[0]
    check_model_inputs([{"image": torch.zeros(3, 4, 4, dtype=torch.uint8)}])  # uint8: no value checks


def test_unknown_input_format_is_refused_when_the_model_is_built():
    cfg = tiny_model_config()
    cfg.input_format = "YUV"
    with pytest.raises(ValueError, match=r"input_format.*\['RGB', 'BGR'\].*'YUV'"):
        instantiate(cfg)
    assert check_input_format("BGR") == "BGR"


def test_pixel_value_check_can_be_lifted_for_reference_tensors():
    inputs = [{"image": torch.full((3, 8, 8), 300.0)}]
    with input_checks.pixel_values_unchecked():
        check_model_inputs(inputs)
        with pytest.raises(ValueError, match="NaN/inf"):
            check_model_inputs([{"image": torch.full((3, 8, 8), float("inf"))}])
    with pytest.raises(ValueError, match="300"):
        check_model_inputs(inputs)


def test_values_are_not_read_while_tracing():
    """A traced / exported graph cannot depend on the values of its input; shapes are still checked."""

    def forward(image):
        check_model_inputs([{"image": image}])
        return image * 2

    torch.jit.trace(forward, torch.full((3, 4, 4), 300.0), check_trace=False)  # no ValueError while tracing
    with pytest.raises(ValueError, match="got shape"):
        torch.jit.trace(forward, torch.zeros(4, 4, 4), check_trace=False)
