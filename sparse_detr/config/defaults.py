"""yacs defaults of Sparse DETR: ``add_sparse_detr_config(cfg)`` adds ``cfg.MODEL.SPARSE_DETR``."""

from __future__ import annotations

import inspect

from detectron2.config import CfgNode as CN

from sparse_detr.modeling.backbone.swin import add_swin_config
from sparse_detr.modeling.meta_arch.graph import DETECTRON2_KEYED_ARGUMENTS, sparse_detr_graph

__all__ = ["add_sparse_detr_config", "graph_defaults"]


def graph_defaults() -> dict:
    """``MODEL.SPARSE_DETR`` key -> default, read from :func:`sparse_detr_graph`'s signature (one table).

    Every keyword of the graph with a default is a key of the same name in upper case, except those that
    Detectron2's own keys carry (``MODEL.PIXEL_MEAN``, ``INPUT.FORMAT``, ...); tuples become lists (yacs).
    """
    defaults = {}
    for name, parameter in inspect.signature(sparse_detr_graph).parameters.items():
        if parameter.default is inspect.Parameter.empty or name in DETECTRON2_KEYED_ARGUMENTS:
            continue
        default = parameter.default
        defaults[name.upper()] = list(default) if isinstance(default, tuple) else default
    return defaults


def _set(cfg: CN, dotted_key: str, value) -> None:
    *parents, leaf = dotted_key.split(".")
    node = cfg
    for part in parents:
        node = node[part]
    node[leaf] = value


def add_sparse_detr_config(cfg: CN) -> CN:
    """Add the Sparse DETR keys (defaults = paper R-50, rho 0.1) and set the model-level Detectron2 keys.

    Sets ``MODEL.META_ARCHITECTURE = "SparseDETR"``, a torchvision-style frozen ResNet-50 returning res3-res5,
    and the graph's defaults for the Detectron2 keys it reads (RGB input with the ImageNet mean/std of the
    official code, 100 detections per image, see ``DETECTRON2_KEYED_ARGUMENTS``); also adds
    ``MODEL.SWIN`` so ``MODEL.BACKBONE.NAME = "SwinBackbone"`` works. Returns ``cfg`` for chaining.
    """
    cfg.MODEL.META_ARCHITECTURE = "SparseDETR"
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    cfg.MODEL.BACKBONE.FREEZE_AT = 2  # stem + res2, like the official conv1 + layer1
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False  # torchvision-style bottleneck
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    add_swin_config(cfg)
    signature = inspect.signature(sparse_detr_graph).parameters
    for name, key in DETECTRON2_KEYED_ARGUMENTS.items():  # normalisation, channel order, detections
        default = signature[name].default
        _set(cfg, key, list(default) if isinstance(default, (tuple, list)) else default)

    sd = cfg.MODEL.SPARSE_DETR = CN()
    for key, default in graph_defaults().items():
        setattr(sd, key, default)
    # the backbone's FrozenBN folded into its convolutions (same function, faster; different rounding from
    # the official model): a backbone setting, not an argument of the graph
    sd.FOLD_FROZEN_BN = True
    return cfg
