"""The yacs twins of the model-zoo configs (configs/yacs/*.yaml): the same models as their LazyConfigs, found
by model_zoo.get_config_file. The documented DefaultPredictor snippet runs in tests/docs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from detectron2.config import CfgNode, instantiate
from detectron2.modeling import build_model

from sparse_detr import model_zoo
from sparse_detr.model_zoo.model_zoo import find_config_file

ROOT = Path(__file__).resolve().parents[2]
YACS_NAMES = [name for name in model_zoo.list_configs() if name.startswith("yacs/")]


def _twin(yacs_name: str) -> str:
    return yacs_name.removeprefix("yacs/").removesuffix(".yaml")


def test_every_lazy_config_has_a_yacs_twin_found_by_name():
    lazy_names = [name for name in model_zoo.list_configs() if "/" not in name]
    assert sorted(_twin(name) for name in YACS_NAMES) == lazy_names
    path = find_config_file("sparse_detr_r50_rho0.2_50ep.yaml")
    assert path == str(ROOT / "configs/yacs/sparse_detr_r50_rho0.2_50ep.yaml")
    assert find_config_file("yacs/sparse_detr_r50_rho0.2_50ep.yaml") == path
    assert find_config_file("sparse_detr_r50_rho0.2_50ep").endswith(".py")  # the LazyConfig
    cfg = model_zoo.get_config("sparse_detr_r50_rho0.2_50ep.yaml")
    assert isinstance(cfg, CfgNode) and pytest.approx(0.2) == cfg.MODEL.SPARSE_DETR.KEEP_RATIO
    assert not any("Base-" in name for name in model_zoo.list_configs())


@pytest.mark.parametrize("yacs_name", YACS_NAMES)
def test_yacs_twin_builds_the_architecture_of_its_lazy_config(yacs_name):
    """Built on the meta device (no memory, no init): module tree, parameter names/shapes and settings."""
    cfg = model_zoo.get_config(yacs_name)
    cfg.MODEL.DEVICE = "meta"
    lazy = model_zoo.get_config(_twin(yacs_name))
    with torch.device("meta"):
        from_yacs, from_lazy = build_model(cfg), instantiate(lazy.model)
    assert repr(from_yacs) == repr(from_lazy)
    shapes = {k: v.shape for k, v in from_yacs.state_dict().items()}
    assert shapes == {k: v.shape for k, v in from_lazy.state_dict().items()}
    settings = ("input_format", "size_divisibility")
    assert {s: getattr(from_yacs, s) for s in settings} == {s: getattr(from_lazy, s) for s in settings}
    # how the backbone runs: its precision setting and the memory format of its weights (channels-last)
    assert from_yacs.backbone.backbone_dtype == from_lazy.backbone.backbone_dtype
    strides = [[p.stride() for p in m.backbone.parameters()] for m in (from_yacs, from_lazy)]
    assert strides[0] == strides[1]
    assert lazy.model.backbone.channels_last == cfg.MODEL.SPARSE_DETR.CHANNELS_LAST
    detections = ("max_detections", "score_threshold")
    assert {s: getattr(from_yacs.top_detections, s) for s in detections} == {
        s: getattr(from_lazy.top_detections, s) for s in detections
    }
    scorers = (from_yacs.token_scorer, from_lazy.token_scorer)
    scorer = [m.keep_ratio for m in scorers if m]
    assert len(set(scorer)) <= 1
    assert (lazy.train.init_checkpoint or "") == cfg.MODEL.WEIGHTS
    assert cfg.DATASETS.TEST[0] == lazy.dataloader.test.dataset.names
    augmentation = lazy.dataloader.test.mapper.augmentations
    resize = (augmentation.min_size, augmentation.max_size)
    assert resize == (cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST)


def test_yacs_yaml_and_lazy_config_build_bit_identical_models():
    """Same seed -> the same state_dict bit for bit and the same detections."""
    cfg = model_zoo.get_config("sparse_detr_r50_rho0.1_50ep.yaml")
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    from_yacs = build_model(cfg).eval()
    torch.manual_seed(0)
    from_lazy = instantiate(model_zoo.get_config("sparse_detr_r50_rho0.1_50ep").model).eval()
    yacs_state, lazy_state = from_yacs.state_dict(), from_lazy.state_dict()
    assert list(yacs_state) == list(lazy_state)
    assert all(torch.equal(yacs_state[k], lazy_state[k]) for k in yacs_state)
    image = torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(0)) * 255
    with torch.no_grad():
        (ours,), (theirs,) = from_yacs([{"image": image}]), from_lazy([{"image": image}])
    assert torch.equal(ours["instances"].scores, theirs["instances"].scores)
    assert torch.equal(ours["instances"].pred_boxes.tensor, theirs["instances"].pred_boxes.tensor)
