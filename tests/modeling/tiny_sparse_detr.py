"""Helpers for the model tests: tiny Sparse DETR models and batches (ResNet-18, 32-d tokens, small images)."""

from __future__ import annotations

import torch
from detectron2.config import LazyCall as L
from detectron2.config import instantiate
from detectron2.modeling.backbone import BasicStem, ResNet
from detectron2.structures import Boxes, Instances

from sparse_detr.modeling import (
    DeformableDecoder,
    MultiScaleNeck,
    PredictionHeads,
    SparseDeformableEncoder,
    SparseDETR,
    TwoStageQueryInit,
    build_token_scorer,
)
from sparse_detr.modeling.criterion import SparseDETRCriterion

NUM_CLASSES = 5


def tiny_model_config(
    scorer: str | None = "dam",
    keep_ratio: float = 0.3,
    enc_layers: int = 2,
    dec_layers: int = 2,
    num_queries: int = 10,
    pre_norm: bool = False,
    backbone_dtype: str = "float32",
):
    """LazyConfig of a small model: ResNet-18 (res3-res5), 32-d tokens, 2 heads, 2 points, 5 classes."""
    scorer_cfg = None
    if scorer is not None:
        extra = {"dim": 32} if scorer in ("dam", "objectness") else {}
        if scorer == "objectness":
            extra["num_classes"] = NUM_CLASSES
        scorer_cfg = L(build_token_scorer)(name=scorer, keep_ratio=keep_ratio, **extra)
    layer = dict(dim=32, ffn_dim=64, num_heads=2, num_levels=4, num_points=2, dropout=0.0)
    return L(SparseDETR)(
        backbone=L(ResNet)(
            stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
            stages=L(ResNet.make_default_stages)(depth=18, norm="FrozenBN"),
            out_features=["res3", "res4", "res5"],
            freeze_at=2,
        ),
        in_features=["res3", "res4", "res5"],
        neck=L(MultiScaleNeck)(in_channels=[128, 256, 512], hidden_dim=32, num_levels=4),
        token_scorer=scorer_cfg,
        encoder=L(SparseDeformableEncoder)(num_layers=enc_layers, pre_norm=pre_norm, **layer),
        decoder=L(DeformableDecoder)(num_layers=dec_layers, **layer),
        query_init=L(TwoStageQueryInit)(dim=32, num_queries=num_queries),
        heads=L(PredictionHeads)(
            hidden_dim=32,
            num_classes=NUM_CLASSES,
            num_decoder_layers=dec_layers,
            two_stage=True,
            num_encoder_layers=enc_layers,
            encoder_aux=True,
        ),
        criterion=L(SparseDETRCriterion)(num_classes=NUM_CLASSES),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
        backbone_dtype=backbone_dtype,
    )


def build_tiny_model(seed: int = 0, **kwargs) -> SparseDETR:
    torch.manual_seed(seed)
    return instantiate(tiny_model_config(**kwargs))


def tiny_batch(
    with_targets: bool = True, empty_second: bool = False, sizes=((64, 96), (48, 64))
) -> list[dict]:
    """Two RGB images of different sizes (so the second is padded), with Detectron2 instances."""
    generator = torch.Generator().manual_seed(1)
    batch = []
    for i, (height, width) in enumerate(sizes):
        item = {
            "image": torch.rand(3, height, width, generator=generator) * 255,
            "height": height,
            "width": width,
        }
        if with_targets:
            instances = Instances((height, width))
            if empty_second and i == 1:
                instances.gt_boxes = Boxes(torch.zeros(0, 4))
                instances.gt_classes = torch.zeros(0, dtype=torch.long)
            else:
                instances.gt_boxes = Boxes(
                    torch.tensor([[4.0, 6.0, width / 2, height / 2], [10.0, 12.0, width - 3, height - 5]])
                )
                instances.gt_classes = torch.tensor([1, 3])
            item["instances"] = instances
        batch.append(item)
    return batch
