"""Every config loads, its model and optimizer build (on the meta device: no memory, no training)."""
import re
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from sparse_detr.config.safe_yaml import check_config_file
from sparse_detr.modeling import SparseDETR

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "configs").glob("*.py"))
PAPER_CONFIGS = [c for c in CONFIGS if c.endswith("_50ep.py")]

# file names other tools and the documentation rely on
REQUIRED = [f"configs/sparse_detr_{net}_rho0.{r}_50ep.py" for net in ("r50", "swint") for r in range(1, 6)]
REQUIRED += [
    "configs/deformable_detr_plus_r50_50ep.py",
    "configs/deformable_detr_plus_swint_50ep.py",
    "configs/deformable_detr_plus_r50_no_encoder_50ep.py",
    "configs/sparse_detr_r50_objectness_rho0.1_50ep.py",
    "configs/sparse_detr_r50_random_rho0.1_50ep.py",
    "configs/sparse_detr_r50_rho0.1_12enc_50ep.py",
    "configs/sparse_detr_swinb_rho0.1_50ep.py",
    "configs/quickstart_shapes.py",
]


def test_required_config_files_exist():
    assert sorted(set(REQUIRED) - set(CONFIGS)) == []


@pytest.mark.parametrize("config", CONFIGS + ["tests/configs/tiny_shapes.py"])
def test_config_builds_model_and_optimizer(config):
    cfg = LazyConfig.load(str(ROOT / config))
    assert {"model", "dataloader", "optimizer", "lr_multiplier", "train"} <= set(cfg)
    with torch.device("meta"):
        model = instantiate(cfg.model)
    assert isinstance(model, SparseDETR)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) > 0
    assert instantiate(cfg.lr_multiplier)(0.0) == 1.0
    assert cfg.dataloader.train.mapper.image_format == model.input_format


@pytest.mark.parametrize("config", CONFIGS)
def test_saved_config_is_plain_yaml_the_tools_accept(config, tmp_path):
    # train_net.py saves the config beside the weights; demo, draw_predictions and --eval-only read it back
    cfg = LazyConfig.load(str(ROOT / config))
    saved = tmp_path / "config.yaml"
    LazyConfig.save(cfg, str(saved))
    check_config_file(saved)
    assert set(LazyConfig.load(str(saved))) == set(cfg)


@pytest.mark.parametrize("config", PAPER_CONFIGS)
def test_paper_configs_follow_the_paper_recipe(config):
    cfg = LazyConfig.load(str(ROOT / config))
    assert cfg.train.max_iter == 50 * 7393 and list(cfg.lr_multiplier.milestones) == [40 * 7393]
    assert cfg.optimizer.lr == 2e-4 and cfg.optimizer.weight_decay == 1e-4
    assert cfg.optimizer.params.backbone_lr_factor == 0.1
    assert cfg.optimizer.params.linear_proj_lr_factor == 0.1
    assert cfg.optimizer.clip_max_norm == 0.1 and cfg.optimizer.clip_norm_type == 2.0  # in the optimizer
    assert cfg.dataloader.train.total_batch_size == 16
    assert cfg.dataloader.train.dataset.names == "coco_2017_train"
    assert cfg.dataloader.test.dataset.names == "coco_2017_val"
    assert cfg.train.output_dir == f"./output/{Path(config).stem}"
    rho = re.search(r"rho(0\.\d)", config)
    if config.startswith("configs/deformable_detr_plus"):
        assert cfg.model.token_scorer is None
    else:
        assert cfg.model.token_scorer.keep_ratio == float(rho.group(1))
    if "no_encoder" in config:
        assert cfg.model.encoder.num_layers == 0
    if "12enc" in config:
        assert cfg.model.encoder.num_layers == 12


def test_quickstart_config_runs_on_the_synthetic_set_on_cpu():
    cfg = LazyConfig.load(str(ROOT / "configs/quickstart_shapes.py"))
    assert cfg.train.device == "cpu"
    assert cfg.dataloader.train.dataset.names == "shapes_train"
    assert cfg.dataloader.test.dataset.names == "shapes_val"
    assert cfg.model.heads.num_classes == 5
