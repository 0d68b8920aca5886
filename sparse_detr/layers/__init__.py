"""Layers: multi-scale deformable attention (compiled kernels + PyTorch path) and its FLOP handle."""

from sparse_detr._ext import extension_available, extension_info
from sparse_detr.layers.flops import (
    MSDA_FLOP_HANDLES,
    add_msda_flop_handle,
    msda_flop_count,
    msda_flop_jit,
    register_default_flop_handles,
)
from sparse_detr.layers.ms_deform_attn import MSDeformAttn
from sparse_detr.layers.ms_deform_attn_function import multi_scale_deform_attn
from sparse_detr.layers.ms_deform_attn_pytorch import ms_deform_attn_pytorch

__all__ = [
    "MSDA_FLOP_HANDLES",
    "MSDeformAttn",
    "add_msda_flop_handle",
    "extension_available",
    "extension_info",
    "ms_deform_attn_pytorch",
    "msda_flop_count",
    "msda_flop_jit",
    "multi_scale_deform_attn",
    "register_default_flop_handles",
]
