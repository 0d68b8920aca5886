"""Backbones: Detectron2's ResNet (plus the official FrozenBN form) and the timm Swin wrapper (registered)."""

from .frozen_bn import (
    AffineFrozenBatchNorm2d,
    FrozenBNFoldedConv2d,
    fold_frozen_batchnorm,
    frozen_bn_as_affine,
)
from .swin import SWIN_VARIANTS, SwinBackbone, add_swin_config

__all__ = [
    "SWIN_VARIANTS",
    "AffineFrozenBatchNorm2d",
    "FrozenBNFoldedConv2d",
    "SwinBackbone",
    "add_swin_config",
    "fold_frozen_batchnorm",
    "frozen_bn_as_affine",
]
