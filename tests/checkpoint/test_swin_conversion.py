"""Official Sparse DETR Swin checkpoints -> SwinBackbone (timm) weights and configs (no official code needed).

The official detection Swin (kakaobrain/sparse-detr ``models/swin_transformer``) names its weights
``backbone.0.body.{patch_embed, layers.i.blocks.j, layers.i.downsample, norm{i}}``: the patch merging runs
at the end of stage ``i``, every returned stage (``out_indices`` 1..3) has its own LayerNorm ``norm{i}``,
and each block stores its ``relative_position_index`` buffer. The numerical match of a converted model
with the official one (outputs, losses, gradients) was checked separately against the official code; here
the official layout is rebuilt by hand from those rules.
"""

from __future__ import annotations

import argparse
import re

import pytest
import torch
from detectron2.config import instantiate

from sparse_detr.checkpoint.key_map import UnknownOfficialKeys, convert_official_state_dict, map_official_key
from sparse_detr.checkpoint.official_config import UnsupportedOfficialArgs, official_model_config
from sparse_detr.checkpoint.safe_loading import CheckpointMismatchError, refuse_unfit_state_dict
from sparse_detr.modeling.backbone import SwinBackbone
from tests.helpers.official_args import SPARSE_ARGS

WINDOW = 7
SWIN_T_ARGS = {
    **SPARSE_ARGS,
    "backbone": "swin-t",
    "backbone_from_scratch": False,
    "finetune_early_layers": False,
}


def load_strictly(model: torch.nn.Module, state_dict: dict) -> None:
    """Converted weights into ``model`` through the checkpointer's strict comparison (keys named)."""
    refuse_unfit_state_dict(model, state_dict, "converted Swin weights")
    model.load_state_dict(state_dict)


def official_relative_position_index(window: int) -> torch.Tensor:
    """Index of the (2w-1)^2 bias table for every pair of tokens of a w x w window (row-major tokens)."""
    rows, cols = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    rows, cols = rows.flatten(), cols.flatten()
    row_offset = rows[:, None] - rows[None, :] + window - 1
    col_offset = cols[:, None] - cols[None, :] + window - 1
    return row_offset * (2 * window - 1) + col_offset


def official_state_dict(backbone: SwinBackbone) -> dict[str, torch.Tensor]:
    """Our backbone's weights under the official detection-Swin names (the official checkpoint layout)."""
    official = {}
    for key, value in backbone.state_dict().items():
        if m := re.fullmatch(r"body\.layers_(\d)\.downsample\.(.+)", key):
            name = f"layers.{int(m[1]) - 1}.downsample.{m[2]}"  # merging at the end of the previous stage
        elif m := re.fullmatch(r"body\.layers_(\d)\.(.+)", key):
            name = f"layers.{m[1]}.{m[2]}"
        elif m := re.fullmatch(r"output_norms\.res(\d)\.(.+)", key):
            name = f"norm{int(m[1]) - 2}.{m[2]}"  # out index i has stride 2 ** (i + 2)
        else:
            name = key.removeprefix("body.")
        official[f"backbone.0.body.{name}"] = value.clone()
        if name.endswith("attn.relative_position_bias_table"):
            index_name = name.replace("relative_position_bias_table", "relative_position_index")
            official[f"backbone.0.body.{index_name}"] = official_relative_position_index(WINDOW)
    return official


def to_backbone_state(converted: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    assert all(k.startswith("backbone.") for k in converted)
    return {k.removeprefix("backbone."): v for k, v in converted.items()}


@pytest.fixture(scope="module")
def source():
    """A Swin-T backbone with every weight perturbed (LayerNorms and bias tables far from their init)."""
    torch.manual_seed(0)
    backbone = SwinBackbone(variant="T").eval()
    with torch.no_grad():
        for parameter in backbone.parameters():
            parameter.add_(torch.randn_like(parameter) * (0.3 if parameter.dim() == 1 else 0.05))
    return backbone


@pytest.fixture(scope="module")
def target():
    torch.manual_seed(1)
    return SwinBackbone(variant="T").eval()


@pytest.mark.parametrize(
    "official_key,ours",
    [
        ("backbone.0.body.patch_embed.proj.weight", "backbone.body.patch_embed.proj.weight"),
        ("backbone.0.body.patch_embed.norm.bias", "backbone.body.patch_embed.norm.bias"),
        (
            "backbone.0.body.layers.2.blocks.5.attn.relative_position_bias_table",
            "backbone.body.layers_2.blocks.5.attn.relative_position_bias_table",
        ),
        ("backbone.0.body.layers.0.blocks.1.attn.qkv.bias", "backbone.body.layers_0.blocks.1.attn.qkv.bias"),
        (
            "backbone.0.body.layers.3.blocks.0.mlp.fc2.weight",
            "backbone.body.layers_3.blocks.0.mlp.fc2.weight",
        ),
        ("backbone.0.body.layers.1.blocks.1.norm2.weight", "backbone.body.layers_1.blocks.1.norm2.weight"),
        (
            "backbone.0.body.layers.0.downsample.reduction.weight",
            "backbone.body.layers_1.downsample.reduction.weight",
        ),
        ("backbone.0.body.layers.2.downsample.norm.bias", "backbone.body.layers_3.downsample.norm.bias"),
        ("backbone.0.body.norm1.weight", "backbone.output_norms.res3.weight"),
        ("backbone.0.body.norm3.bias", "backbone.output_norms.res5.bias"),
        # not part of the detection Swin: the classification head and final norm, unknown block parts
        ("backbone.0.body.norm.weight", None),
        ("backbone.0.body.head.weight", None),
        ("backbone.0.body.layers.0.blocks.0.attn.relative_position_index", None),
        ("backbone.0.body.layers.0.blocks.0.attn.mystery.weight", None),
        ("backbone.0.body.layers.0.downsample.reduction.bias", None),
    ],
)
def test_swin_key_map(official_key, ours):
    assert map_official_key(official_key) == ours


def test_official_swin_weights_reproduce_the_source_backbone(source, target):
    official = official_state_dict(source)
    assert len(official) == len(source.state_dict()) + sum(
        k.endswith("relative_position_bias_table") for k in source.state_dict()
    )
    load_strictly(
        target, to_backbone_state(convert_official_state_dict(official, share_heads=False))
    )
    loaded = target.state_dict()
    for key, value in source.state_dict().items():
        assert torch.equal(loaded[key], value), key
    image = torch.randn(1, 3, 75, 101)  # not a multiple of the patch, merging or window sizes
    with torch.no_grad():
        expected, converted = source(image), target(image)
    for name in ("res3", "res4", "res5"):
        torch.testing.assert_close(converted[name], expected[name], rtol=0, atol=0)


def official_patch_merging(x: torch.Tensor, norm: torch.nn.LayerNorm, reduction: torch.nn.Linear):
    """Official PatchMerging on Float[B, H, W, C] (even H, W): 2x2 neighbours concatenated as
    (row 0, col 0), (row 1, col 0), (row 0, col 1), (row 1, col 1), then LayerNorm and reduction."""
    parts = [x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]]
    return reduction(norm(torch.cat(parts, dim=-1)))


def test_patch_merging_concatenates_neighbours_in_the_official_order(source, target):
    official = official_state_dict(source)
    load_strictly(
        target, to_backbone_state(convert_official_state_dict(official, share_heads=False))
    )
    merging = target.body.layers_2.downsample  # official layers.1.downsample (stride 8 -> 16)
    norm = torch.nn.LayerNorm(4 * 192)
    reduction = torch.nn.Linear(4 * 192, 384, bias=False)
    norm.load_state_dict(
        {p: official[f"backbone.0.body.layers.1.downsample.norm.{p}"] for p in ("weight", "bias")}
    )
    reduction.weight.data.copy_(official["backbone.0.body.layers.1.downsample.reduction.weight"])
    x = torch.randn(2, 6, 8, 192)
    with torch.no_grad():
        torch.testing.assert_close(merging(x), official_patch_merging(x, norm, reduction))
        # the check is sensitive to the order: swapping the (1, 0) and (0, 1) neighbours changes it
        swapped = x.clone()
        swapped[:, 1::2, 0::2], swapped[:, 0::2, 1::2] = x[:, 0::2, 1::2], x[:, 1::2, 0::2]
        assert (merging(x) - official_patch_merging(swapped, norm, reduction)).abs().max() > 1e-2


def test_missing_unknown_and_inconsistent_swin_keys_are_named(source, target):
    official = official_state_dict(source)

    missing = dict(official)
    del missing["backbone.0.body.layers.2.downsample.reduction.weight"]
    converted = to_backbone_state(convert_official_state_dict(missing, share_heads=False))
    with pytest.raises(CheckpointMismatchError, match=r"body\.layers_3\.downsample\.reduction\.weight"):
        load_strictly(target, converted)

    classifier = {**official, "backbone.0.body.norm.weight": torch.ones(768)}
    with pytest.raises(UnknownOfficialKeys, match=r"backbone\.0\.body\.norm\.weight"):
        convert_official_state_dict(classifier, share_heads=False)

    # a merging after the last stage (the official model has none) has no place in ours
    extra = {**official, "backbone.0.body.layers.3.downsample.reduction.weight": torch.zeros(1536, 3072)}
    converted = to_backbone_state(convert_official_state_dict(extra, share_heads=False))
    with pytest.raises(CheckpointMismatchError, match=r"body\.layers_4\.downsample\.reduction\.weight"):
        load_strictly(target, converted)

    key = "backbone.0.body.layers.1.blocks.0.attn.relative_position_index"
    for bad in (official[key].t().flip(0), official_relative_position_index(WINDOW + 1)[:49, :49]):
        with pytest.raises(ValueError, match=re.escape(key)):
            convert_official_state_dict({**official, key: bad}, share_heads=False)


@pytest.mark.parametrize(
    "backbone,variant,channels,drop_path",
    [("swin-t", "T", [192, 384, 768], 0.2), ("swin-b", "B", [256, 512, 1024], 0.5)],
)
@pytest.mark.parametrize("from_scratch,freeze_at", [(False, 2), (True, 0)])
def test_config_builds_the_official_swin(backbone, variant, channels, drop_path, from_scratch, freeze_at):
    cfg = official_model_config(
        argparse.Namespace(**{**SWIN_T_ARGS, "backbone": backbone, "backbone_from_scratch": from_scratch})
    )
    assert cfg.backbone.module.variant == variant
    assert cfg.backbone.module.drop_path_rate == drop_path
    assert cfg.backbone.module.freeze_at == freeze_at  # official frozen_stages 2 (or -1 from scratch)
    assert list(cfg.backbone.module.out_features) == ["res3", "res4", "res5"]
    assert cfg.backbone.module.norm_outputs and cfg.backbone.module.pad_before_shift
    assert list(cfg.neck.in_channels) == channels
    with torch.device("meta"):  # shapes only
        backbone_module = instantiate(cfg.backbone)
    assert [s.channels for s in backbone_module.output_shape().values()] == channels


def test_lr_backbone_zero_does_not_freeze_the_official_swin():
    cfg = official_model_config({**SWIN_T_ARGS, "lr_backbone": 0.0})
    assert cfg.backbone.module.freeze_at == 2


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(backbone="swin-l"), "backbone"),  # no Swin-L SwinBackbone variant
        (dict(num_feature_levels=1), "num_feature_levels"),  # the official Swin fails on one level
        (dict(dilation=True), "dilation"),
    ],
)
def test_unsupported_swin_args_are_refused(change, message):
    with pytest.raises(UnsupportedOfficialArgs, match=message):
        official_model_config({**SWIN_T_ARGS, **change})
