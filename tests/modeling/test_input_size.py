"""Inputs too small for the model's feature levels are refused by name, with the minimum from its strides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.config import LazyConfig
from detectron2.config import instantiate as build

from sparse_detr.engine.predictor import Predictor
from sparse_detr.modeling.input_size import level_sizes, level_strides, minimum_image_side
from tests.helpers.tiny_sparse_detr import build_tiny_model, tiny_model_config

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "tests/configs/tiny_shapes.py")


def _image(height: int, width: int, **extra) -> dict:
    return {"image": torch.full((3, height, width), 100, dtype=torch.uint8), **extra}


def test_the_minimum_follows_the_strides_and_levels():
    assert level_strides([8, 16, 32], 4) == [8, 16, 32, 64]
    assert minimum_image_side(level_strides([8, 16, 32], 4)) == 65
    assert minimum_image_side(level_strides([8, 16, 32], 3)) == 33
    assert minimum_image_side(level_strides([4, 8, 16, 32], 5)) == 65
    assert level_sizes(65, 64, [8, 16, 32, 64]) == [(9, 8), (5, 4), (3, 2), (2, 1)]


def test_the_model_levels_match_the_predicted_sizes():
    model = build_tiny_model().eval()
    assert model.level_strides == [8, 16, 32, 64]
    with torch.no_grad():
        for size in ((65, 65), (64, 200), (97, 130)):
            images, mask = model.preprocess_image([_image(*size)])
            tokens = model.predict(images.tensor, mask).tokens
            expected = [list(s) for s in level_sizes(*size, model.level_strides)]
            assert tokens.spatial_shapes.tolist() == expected


@pytest.mark.parametrize("levels, minimum", [(4, 65), (3, 33)])
@pytest.mark.parametrize("training", [False, True])
def test_a_single_image_too_small_is_named_with_its_size_and_the_minimum(levels, minimum, training):
    cfg = tiny_model_config()
    cfg.neck.num_levels = levels
    torch.manual_seed(0)
    model = build(cfg).train(training)
    small = minimum - 1
    with pytest.raises(
        ValueError,
        match=rf"photo_07\.jpg: {small}x{small} pixels .*stride {minimum - 1}.*at least {minimum} px",
    ):
        model([_image(small, small, file_name="photo_07.jpg", instances=None)])
    model.eval()
    with torch.no_grad():
        model([_image(small, minimum)])  # one side above the coarsest stride: 2 positions on that level


def test_the_predictors_name_the_image_and_its_size_after_resize(stand_in_weights):
    cfg = LazyConfig.load(TINY)
    cfg.dataloader.test.mapper.augmentations.min_size = 64  # a 64-px test size
    cfg.dataloader.test.mapper.augmentations.max_size = 64
    predictor = Predictor(cfg, stand_in_weights(TINY), device="cpu")
    image = np.zeros((120, 100, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"'holiday\.png': 64x53 pixels .*at least 65 px"):
        predictor(image, name="'holiday.png'")
