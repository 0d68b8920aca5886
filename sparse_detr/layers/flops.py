"""fvcore FLOP counting for multi-scale deformable attention.

The official Sparse DETR benchmark (``util/benchmark.py``) counts FLOPs with fvcore on the PyTorch
path, where only ``aten::grid_sampler`` is counted, at 4 FLOPs per sampled output element (fvcore's
bilinear estimate); the attention-weighted sum is not counted. :func:`msda_flop_jit` gives the compiled
op the same count, so both backends report the paper's GFLOPs:

    flops = 4 * N * Q * M * L * P * D

Importing this module (any import of ``sparse_detr``'s models does) adds the handle to fvcore's default
handles, which every ``FlopCountAnalysis`` starts from: fvcore's own, Detectron2's
``detectron2.utils.analysis.flop_count_operators`` and its ``tools/analyze_model.py --tasks flop`` count the
op instead of reporting ``Unsupported operator sparse_detr::ms_deform_attn``.
"""

from __future__ import annotations

from importlib import import_module

from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape

from sparse_detr.layers.ms_deform_attn_function import EXTENSION_OP_NAME

BILINEAR_FLOPS_PER_SAMPLE = 4


def msda_flop_count(value_shape, sampling_locations_shape) -> int:
    """FLOPs of one call: value (N, S, M, D), sampling_locations (N, Q, M, L, P, 2)."""
    batch, _, num_heads, head_dim = value_shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations_shape
    return BILINEAR_FLOPS_PER_SAMPLE * batch * num_queries * num_heads * num_levels * num_points * head_dim


def msda_flop_jit(inputs, outputs) -> int:
    """fvcore handle for the traced node ``sparse_detr::ms_deform_attn`` (inputs as in the op schema)."""
    return msda_flop_count(get_shape(inputs[0]), get_shape(inputs[3]))


MSDA_FLOP_HANDLES = {EXTENSION_OP_NAME: msda_flop_jit}


def add_msda_flop_handle(flop_analysis: FlopCountAnalysis) -> FlopCountAnalysis:
    """Register :func:`msda_flop_jit` on ``flop_analysis`` (returned for chaining)."""
    return flop_analysis.set_op_handle(**MSDA_FLOP_HANDLES)


def register_default_flop_handles() -> bool:
    """Add :data:`MSDA_FLOP_HANDLES` to fvcore's default handles; False if this fvcore keeps none."""
    # the module (``fvcore.nn.flop_count`` as an attribute is the function of that name)
    defaults = getattr(import_module("fvcore.nn.flop_count"), "_DEFAULT_SUPPORTED_OPS", None)
    if not isinstance(defaults, dict):
        return False
    defaults.update(MSDA_FLOP_HANDLES)
    return True


register_default_flop_handles()
