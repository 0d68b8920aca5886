"""``multi_scale_deform_attn``: input checks and dispatch between the compiled kernels and PyTorch.

The compiled op is ``torch.ops.sparse_detr.ms_deform_attn`` (C++ for CPU tensors, CUDA for CUDA
tensors), made differentiable with ``torch.library.register_autograd`` so that ``torch.jit.trace``
(and therefore fvcore) records it as one named node.
"""

from __future__ import annotations

import contextlib
import contextvars
import warnings

import torch

import sparse_detr._ext as _ext
from sparse_detr.layers.ms_deform_attn_pytorch import ms_deform_attn_pytorch

BACKENDS = ("auto", "pytorch", "extension")
EXTENSION_OP_NAME = "sparse_detr::ms_deform_attn"
_REDUCED_PRECISION = (torch.float16, torch.bfloat16)

_fallback_warned = False
# set by ``forced_backend``: the backend every call uses, whatever its module asks for (export)
_forced_backend: contextvars.ContextVar[str | None] = contextvars.ContextVar("msda_backend", default=None)


@contextlib.contextmanager
def forced_backend(backend: str):
    """Run every ``multi_scale_deform_attn`` call inside the block with ``backend``.

    The exporters use it to choose how deformable attention is written into the traced graph
    ("pytorch": standard ops, "extension": the compiled op) without changing the model's modules.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    token = _forced_backend.set(backend)
    try:
        yield
    finally:
        _forced_backend.reset(token)


def _shape_error(name: str, expected: str, tensor: torch.Tensor) -> ValueError:
    return ValueError(f"{name} must have shape {expected}, got {tuple(tensor.shape)}")


def _check_inputs(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                  level_shapes=None):
    """Raise ValueError naming the first argument whose shape, dtype or device is wrong.

    With ``level_shapes`` (the sizes as ints) the tensors' data is not read: the sizes are checked
    against ``value`` instead.

    Returns:
        list of (H_l, W_l) Python ints.
    """
    tensors = {
        "value": value,
        "spatial_shapes": spatial_shapes,
        "level_start_index": level_start_index,
        "sampling_locations": sampling_locations,
        "attention_weights": attention_weights,
    }
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if value.dim() != 4:
        raise _shape_error("value", "(N, S, M, D)", value)
    batch, num_tokens, num_heads, _ = value.shape
    if spatial_shapes.dim() != 2 or spatial_shapes.shape[1] != 2:
        raise _shape_error("spatial_shapes", "(L, 2) holding (H, W) per level", spatial_shapes)
    num_levels = spatial_shapes.shape[0]
    if num_levels == 0:
        raise ValueError("spatial_shapes must hold at least one level (H, W), got shape (0, 2)")
    if level_start_index.shape != (num_levels,):
        raise _shape_error("level_start_index", f"(L,) = ({num_levels},)", level_start_index)
    if sampling_locations.dim() != 6 or sampling_locations.shape[-1] != 2:
        raise _shape_error("sampling_locations", "(N, Q, M, L, P, 2)", sampling_locations)
    _, num_queries, _, _, num_points, _ = sampling_locations.shape
    expected = (batch, num_queries, num_heads, num_levels, num_points, 2)
    if sampling_locations.shape != expected:
        raise _shape_error("sampling_locations", f"(N, Q, M, L, P, 2) = {expected}", sampling_locations)
    if attention_weights.shape != expected[:-1]:
        raise _shape_error("attention_weights", f"(N, Q, M, L, P) = {expected[:-1]}", attention_weights)
    for name in ("spatial_shapes", "level_start_index"):
        if tensors[name].dtype != torch.int64:
            raise ValueError(f"{name} must have dtype torch.int64, got {tensors[name].dtype}")
    for name in ("value", "sampling_locations", "attention_weights"):
        if not tensors[name].is_floating_point():
            raise ValueError(f"{name} must be a floating point tensor, got {tensors[name].dtype}")
    devices = {tensor.device for tensor in tensors.values()}
    if len(devices) != 1:
        raise ValueError(f"all inputs must be on one device, got {sorted(str(d) for d in devices)}")

    if level_shapes is not None:
        level_shapes = [tuple(shape) for shape in level_shapes]
        if len(level_shapes) != num_levels:
            raise ValueError(f"level_shapes must hold L = {num_levels} pairs (H, W), got {level_shapes}")
        if sum(h * w for h, w in level_shapes) != num_tokens:
            raise ValueError(
                f"value must have shape (N, S, M, D) with S = sum(H * W) for level_shapes {level_shapes}, "
                f"got S = {num_tokens}"
            )
        return level_shapes
    level_shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    if any(h < 1 or w < 1 for h, w in level_shapes):
        raise ValueError(f"spatial_shapes must hold positive (H, W) per level, got {level_shapes}")
    sizes = [h * w for h, w in level_shapes]
    if sum(sizes) != num_tokens:
        raise ValueError(
            f"value must have shape (N, S, M, D) with S = sum(H * W) = {sum(sizes)} for spatial_shapes "
            f"{level_shapes}, got S = {num_tokens}"
        )
    starts = [sum(sizes[:level]) for level in range(num_levels)]
    if level_start_index.tolist() != starts:
        raise ValueError(f"level_start_index must be {starts} for spatial_shapes {level_shapes}, "
                         f"got {level_start_index.tolist()}")
    return level_shapes


def _resolve_backend(backend: str) -> str:
    global _fallback_warned
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    backend = _forced_backend.get() or backend
    if backend == "extension":
        _ext.require_extension()
        return backend
    if backend == "auto":
        if _ext.extension_available():
            return "extension"
        if not _fallback_warned:
            _fallback_warned = True
            warnings.warn(
                "multi-scale deformable attention runs the PyTorch fallback (ms_deform_attn_pytorch, about "
                "1.5x slower on CPU than the C++ kernel) because " + _ext.missing_extension_message(),
                stacklevel=3,
            )
    return "pytorch"


def multi_scale_deform_attn(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
    backend: str = "auto",
    level_shapes: list[tuple[int, int]] | None = None,
) -> torch.Tensor:
    """Multi-scale deformable attention (Deformable DETR, eq. 3), differentiable in all float inputs.

    Args:
        value: (N, S, M, D) per-head values of the flattened levels, S = sum(H_l * W_l).
        spatial_shapes: (L, 2) int64, (H_l, W_l) per level.
        level_start_index: (L,) int64, offset of each level in S.
        sampling_locations: (N, Q, M, L, P, 2) normalised (x, y) in [0, 1]; bilinear sampling with
            ``grid_sample(align_corners=False, padding_mode="zeros")`` semantics (outside reads 0).
            Both backends: a location that is not finite (NaN or +-inf) makes the output of its query
            and head NaN (as grid_sample does); its attention-weight gradient is NaN, its location
            gradient not finite, and it adds nothing to the value gradient.
        attention_weights: (N, Q, M, L, P). A non-finite weight makes the output of its query and head
            and its location gradient NaN, also when its sample falls outside the map (0 * NaN).
        backend: "pytorch" (grid_sample path), "extension" (compiled kernels; ImportError when not
            built), or "auto" (extension when built, else PyTorch with a single warning); inside
            :func:`forced_backend` that block's backend.
        level_shapes: ``spatial_shapes`` as L pairs of ints read from the map shapes (symbolic under
            ``torch.export``); when given, no tensor data is read (no device sync, nothing data-dependent
            in a traced graph). None = read ``spatial_shapes`` (and check ``level_start_index``).

    Returns:
        (N, Q, M * D) in the promoted dtype of the float inputs. float16/bfloat16 inputs are computed
        in float32 and the output is cast back (AMP).
    """
    level_shapes = _check_inputs(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights, level_shapes
    )
    backend = _resolve_backend(backend)
    out_dtype = torch.promote_types(torch.promote_types(value.dtype, sampling_locations.dtype),
                                    attention_weights.dtype)
    compute_dtype = torch.float32 if out_dtype in _REDUCED_PRECISION else out_dtype
    value, sampling_locations, attention_weights = (
        tensor.to(compute_dtype) for tensor in (value, sampling_locations, attention_weights)
    )
    if backend == "extension":
        output = torch.ops.sparse_detr.ms_deform_attn(
            value, spatial_shapes, level_start_index, sampling_locations, attention_weights
        )
    else:
        output = ms_deform_attn_pytorch(value, level_shapes, sampling_locations, attention_weights)
    return output.to(out_dtype)


def _setup_context(ctx, inputs, output):
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights = inputs
    ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)


def _backward(ctx, grad_output):
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights = ctx.saved_tensors
    grad_value, grad_locations, grad_weights = torch.ops.sparse_detr.ms_deform_attn_backward(
        value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
        grad_output.contiguous(),
    )
    return grad_value, None, None, grad_locations, grad_weights


def _forward_fake(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """Output metadata without computing (meta/fake tensors: torch.compile, torch.export)."""
    batch, _, heads, head_dim = value.shape
    return value.new_empty(batch, sampling_locations.shape[1], heads * head_dim)


def _backward_fake(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                   grad_output):
    return value.new_empty(value.shape), sampling_locations.new_empty(sampling_locations.shape), \
        attention_weights.new_empty(attention_weights.shape)


if _ext.extension_available():
    torch.library.register_autograd(EXTENSION_OP_NAME, _backward, setup_context=_setup_context)
    torch.library.register_fake(EXTENSION_OP_NAME)(_forward_fake)
    torch.library.register_fake(EXTENSION_OP_NAME + "_backward")(_backward_fake)
