"""Layers: multi-scale deformable attention (compiled kernels + PyTorch path) and its FLOP handle."""

from sparse_detr._ext import extension_info
from sparse_detr.layers import flops  # noqa: F401  (adds the op's FLOP handle to fvcore's defaults)
from sparse_detr.layers.ms_deform_attn import MSDeformAttn
from sparse_detr.layers.ms_deform_attn_function import multi_scale_deform_attn

__all__ = ["MSDeformAttn", "extension_info", "multi_scale_deform_attn"]
