"""Helpers for the model tests: tiny Sparse DETR models and batches (ResNet-18, 32-d tokens, small images)."""

from __future__ import annotations

import torch
from detectron2.config import LazyCall as L
from detectron2.config import instantiate
from detectron2.modeling.backbone import BasicStem, ResNet
from detectron2.structures import Boxes, Instances

from sparse_detr.modeling import SparseDETR
from sparse_detr.modeling.meta_arch import sparse_detr_graph

NUM_CLASSES = 5


def tiny_model_config(
    scorer: str | None = "dam",
    keep_ratio: float = 0.3,
    enc_layers: int = 2,
    dec_layers: int = 2,
    num_queries: int = 10,
    pre_norm: bool = False,
    channels_last: bool = False,
    backbone_dtype: str = "float32",
    backbone=None,
    in_channels=(128, 256, 512),
):
    """LazyConfig of a small model: ResNet-18 (res3-res5; or ``backbone`` with ``in_channels``), 32-d tokens,
    2 heads, 2 points, 5 classes."""
    if backbone is None:
        backbone = L(ResNet)(
            stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
            stages=L(ResNet.make_default_stages)(depth=18, norm="FrozenBN"),
            out_features=["res3", "res4", "res5"],
            freeze_at=2,
        )
    return sparse_detr_graph(
        backbone=backbone,
        in_channels=list(in_channels),
        num_classes=NUM_CLASSES,
        hidden_dim=32,
        num_heads=2,
        dim_feedforward=64,
        dropout=0.0,
        enc_layers=enc_layers,
        enc_points=2,
        pre_norm=pre_norm,
        dec_layers=dec_layers,
        dec_points=2,
        num_queries=num_queries,
        token_scorer=scorer,
        keep_ratio=keep_ratio,
        channels_last=channels_last,
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


def tiny_yacs_config():
    """A yacs config (``add_sparse_detr_config``) of a small CPU model: ResNet-18, width 32, 1 + 1 layers,
    10 queries, test images resized to 64 / 96 pixels."""
    from detectron2.config import get_cfg

    from sparse_detr.config import add_sparse_detr_config

    cfg = add_sparse_detr_config(get_cfg())
    cfg.merge_from_list(
        ["MODEL.RESNETS.DEPTH", 18, "MODEL.RESNETS.RES2_OUT_CHANNELS", 64, "MODEL.DEVICE", "cpu"]
        + ["MODEL.SPARSE_DETR.HIDDEN_DIM", 32, "MODEL.SPARSE_DETR.DIM_FEEDFORWARD", 64]
        + ["MODEL.SPARSE_DETR.ENC_LAYERS", 1, "MODEL.SPARSE_DETR.DEC_LAYERS", 1]
        + ["MODEL.SPARSE_DETR.NUM_QUERIES", 10, "INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 96]
    )
    return cfg
