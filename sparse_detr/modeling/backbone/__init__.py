"""Backbones: Detectron2's ResNet (plus the official FrozenBN form) and the timm Swin wrapper (registered)."""

from .swin import SwinBackbone

__all__ = ["SwinBackbone"]
