import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from torch import nn

from sparse_detr.engine import detr_param_groups


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.ModuleDict({"conv": nn.Conv2d(3, 4, 1), "frozen": nn.Linear(2, 2)})
        self.backbone["frozen"].requires_grad_(False)
        self.encoder = nn.ModuleDict({"sampling_offsets": nn.Linear(4, 8), "value_proj": nn.Linear(4, 4)})
        self.reference_points = nn.Linear(4, 2)
        self.head = nn.Linear(4, 3)


def _names(model, group):
    ids = {id(p) for p in group["params"]}
    return sorted(n for n, p in model.named_parameters() if id(p) in ids)


def test_groups_match_the_official_name_rules():
    model = Toy()
    groups = {g["name"]: g for g in detr_param_groups(model, base_lr=2e-4)}
    assert _names(model, groups["backbone"]) == ["backbone.conv.bias", "backbone.conv.weight"]
    assert _names(model, groups["linear_proj"]) == [
        "encoder.sampling_offsets.bias", "encoder.sampling_offsets.weight",
        "reference_points.bias", "reference_points.weight",
    ]
    assert _names(model, groups["default"]) == [
        "encoder.value_proj.bias", "encoder.value_proj.weight", "head.bias", "head.weight"
    ]
    assert groups["default"]["lr"] == 2e-4
    assert groups["backbone"]["lr"] == pytest.approx(2e-5)
    assert groups["linear_proj"]["lr"] == pytest.approx(2e-5)


def test_empty_groups_are_dropped():
    model = nn.Sequential(nn.Linear(2, 2))
    assert [g["name"] for g in detr_param_groups(model, base_lr=1.0)] == ["default"]


def test_config_optimizer_on_the_quickstart_model():
    cfg = LazyConfig.load("configs/quickstart_shapes.py")
    model = instantiate(cfg.model)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    assert isinstance(optimizer, torch.optim.AdamW)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert set(groups) == {"default", "backbone", "linear_proj"}
    assert all(g["weight_decay"] == 1e-4 for g in optimizer.param_groups)
    assert groups["linear_proj"]["lr"] == pytest.approx(0.1 * groups["default"]["lr"])
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    grouped = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(trainable)  # every trainable parameter exactly once
    offsets = [n for n in _names(model, groups["linear_proj"]) if "sampling_offsets" in n]
    # a weight and a bias per attention layer
    assert len(offsets) == 2 * (model.encoder.num_layers + model.decoder.num_layers)
