"""projects/SparseDETR/visualize_tokens.py: the token / DAM / Corr figure of one or several models."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from sparse_detr.data.catalog import class_names
from sparse_detr.engine.predictor import Predictor
from sparse_detr.model_zoo.tool_configs import load_tool_config
from sparse_detr.visualization import token_figure
from tests.helpers.project_scripts import TINY_CONFIG, load_script

visualize = load_script("visualize_tokens")
apps = load_script("apps")


@pytest.fixture
def image_path(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(path)
    return path


OBJECTNESS_VARIANT = """\
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig

from sparse_detr.modeling.scorers import ObjectnessScorer

_tiny = LazyConfig.load({tiny!r})
model, dataloader, train = _tiny.model, _tiny.dataloader, _tiny.train
model.token_scorer = L(ObjectnessScorer)(dim=32, num_classes=5, keep_ratio=0.3)
"""


def test_writes_a_png_for_the_dam_and_the_objectness_scorer_side_by_side(
    image_path, tmp_path, stand_in_weights
):
    objectness = tmp_path / "tiny_objectness.py"
    objectness.write_text(OBJECTNESS_VARIANT.format(tiny=TINY_CONFIG))
    output = tmp_path / "figures"
    written = visualize.main(
        [
            "--config-file",
            TINY_CONFIG,
            str(objectness),
            "--weights",
            stand_in_weights(TINY_CONFIG),
            stand_in_weights(str(objectness)),
            "--input",
            str(image_path),
            "--output",
            str(output),
            "--top-k",
            "10",
            "--rho",
            "0.2",
        ]
    )
    assert written == [str(output / "photo_tokens.png")]
    with Image.open(written[0]) as figure:
        assert figure.size[0] > figure.size[1] > 0


def test_token_view_matches_the_selection(image_path, stand_in_weights):
    cfg = load_tool_config(
        TINY_CONFIG, ["model.token_scorer.keep_ratio=0.25"], stand_in_weights(TINY_CONFIG), "cpu"
    )
    predictor = Predictor(cfg)
    image = np.asarray(Image.open(image_path))[:, :, ::-1]
    model_input = predictor.model_input(image)
    view = token_figure.analyze_image(predictor.model, model_input)
    assert len(view.refined) == len(view.attention) == 4
    num_valid = sum(level.size for level in view.refined)
    assert sum(int(level.sum()) for level in view.refined) == int(num_valid * 0.25) + 1
    assert view.corr.shape == (5,) and 0.0 <= view.corr[0] <= 1.0
    assert sum(float(level.sum()) for level in view.attention) > 0
    assert view.queries.shape[1] == 2 and (view.query_levels >= 0).all()
    assert view.keep_ratio == pytest.approx(0.25)


def test_level_map_to_image_follows_the_stride_grid():
    level = np.array([[0, 1], [2, 3]], dtype=np.float32)  # stride 64 on a 100x100 input
    upsampled = token_figure.level_map_to_image(level, (100, 100), (100, 100))
    assert upsampled[0, 0] == 0 and upsampled[0, 63] == 0 and upsampled[0, 64] == 1 and upsampled[99, 99] == 3


def test_inputs_sharing_a_name_get_distinct_figures_and_an_unusable_one_is_skipped(
    tmp_path, stand_in_weights
):
    rng = np.random.default_rng(4)
    for relative in ("a/photo.png", "b/photo.png"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(tmp_path / relative)
    Image.fromarray(np.zeros((2, 900, 3), dtype=np.uint8)).save(tmp_path / "a" / "strip.png")
    inputs = [str(tmp_path / r) for r in ("a/photo.png", "a/strip.png", "b/photo.png")]
    output = tmp_path / "figures"
    weights = stand_in_weights(TINY_CONFIG)
    arguments = ["--config-file", TINY_CONFIG, "--weights", weights, "--input", *inputs]
    written = visualize.main([*arguments, "--output", str(output)])
    assert sorted(str(p.relative_to(output)) for p in output.rglob("*.png")) == [
        "a/photo_tokens.png",
        "b/photo_tokens.png",
    ]
    assert len(written) == 2


def test_class_names_of_a_converted_official_model_without_dataset():
    model_only = OmegaConf.create({"model": {}})
    contiguous = class_names(model_only, 80)
    assert contiguous[0] == "person" and contiguous[-1] == "toothbrush"
    by_category_id = class_names(model_only, 91)
    assert by_category_id[1] == "person" and by_category_id[90] == "toothbrush" and by_category_id[12] == "12"
    assert class_names(model_only, 7) == [str(i) for i in range(7)]
