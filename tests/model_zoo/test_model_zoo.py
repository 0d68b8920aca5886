"""sparse_detr.model_zoo: every config of configs/ by name, untrained models, official release URLs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from sparse_detr import model_zoo
from sparse_detr.model_zoo.model_zoo import find_config_file
from sparse_detr.model_zoo.tool_configs import load_tool_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
EXPECTED = sorted(p.stem for p in CONFIG_DIR.glob("*.py"))
YACS_TWINS = sorted(
    f"yacs/{p.name}" for p in (CONFIG_DIR / "yacs").glob("*.yaml") if not p.name.startswith("Base-")
)


def test_lists_every_config_file_and_no_common_part():
    names = model_zoo.list_configs()
    assert names == EXPECTED + YACS_TWINS
    assert "sparse_detr_r50_rho0.1_50ep" in names and "deformable_detr_plus_swint_50ep" in names
    assert not any(name.startswith("common") for name in names)


@pytest.mark.parametrize("name", EXPECTED)
def test_get_config_loads_every_config(name):
    path = find_config_file(name)
    assert path == str(CONFIG_DIR / f"{name}.py")
    assert find_config_file(name + ".py") == path
    cfg = model_zoo.get_config(name)
    assert isinstance(cfg, DictConfig)
    assert cfg.model._target_ is not None


def test_unknown_name_lists_the_available_configs():
    with pytest.raises(FileNotFoundError, match="sparse_detr_r50_rho0.1_50ep"):
        model_zoo.get_config("sparse_detr_r51_rho0.1_50ep")


def test_official_checkpoint_urls_cover_the_paper_configs():
    for backbone in ("r50", "swint"):
        for tenth in range(1, 6):
            url = model_zoo.get_checkpoint_url(f"sparse_detr_{backbone}_rho0.{tenth}_50ep.py")
            assert url.endswith(f"sparse_detr_{backbone}_{tenth}0.pth")
    assert model_zoo.get_checkpoint_url("deformable_detr_plus_r50_50ep") is None


def test_get_builds_an_untrained_model_in_eval_mode():
    model = model_zoo.get("quickstart_shapes", device="cpu")
    assert not model.training
    assert model.device == torch.device("cpu")
    assert model.token_scorer.keep_ratio == pytest.approx(0.3)


def test_the_tools_read_a_yacs_yaml(tmp_path):
    yaml = tmp_path / "tiny.yaml"
    yaml.write_text("MODEL:\n  SPARSE_DETR:\n    KEEP_RATIO: 0.2\n    HIDDEN_DIM: 64\n")
    cfg = load_tool_config(str(yaml))
    assert cfg.MODEL.META_ARCHITECTURE == "SparseDETR"
    assert pytest.approx(0.2) == cfg.MODEL.SPARSE_DETR.KEEP_RATIO


def test_the_tools_reject_an_unknown_yaml(tmp_path):
    yaml = tmp_path / "other.yaml"
    yaml.write_text("something: 1\n")
    with pytest.raises(ValueError, match="other.yaml"):
        load_tool_config(str(yaml))
