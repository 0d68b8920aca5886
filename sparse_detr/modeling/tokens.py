"""The flattened multi-scale token sequence and the per-token geometry derived from the padding masks.

Token layout: the L feature levels are flattened row-major and concatenated; level ``l`` starts at
``level_start_index[l]`` and has ``spatial_shapes[l] = (H_l, W_l)``; N = sum(H_l * W_l).

The level sizes travel twice: as Python ints read from the map shapes (``TokenBatch.level_shapes``, what
loops and ``split`` need; symbolic sizes under ``torch.export``) and as the Long[L, 2] tensor built from
them in the graph (what the kernels take). Nothing here reads a size back from tensor data.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

__all__ = [
    "TokenBatch",
    "spatial_shapes_tensor",
    "gather_tokens",
    "flatten_levels",
    "encoder_reference_points",
    "grid_proposals",
    "inverse_sigmoid",
]


@dataclass
class TokenBatch:
    """Multi-scale tokens of a batch of images.

    Attributes:
        features: Float[B, N, C] projected backbone features.
        pos: Float[B, N, C] sine position embedding + level embedding.
        padding_mask: Bool[B, N], True on padding tokens.
        spatial_shapes: Long[L, 2] (H_l, W_l).
        level_start_index: Long[L].
        valid_ratios: Float[B, L, 2] valid (w, h) fraction of each level.
        level_shapes: L pairs (H_l, W_l) as ints read from the map shapes (``spatial_shapes`` as ints).
        unpadded: built without a padding mask: no token is padding, known without reading the mask.
    """

    features: Tensor
    pos: Tensor
    padding_mask: Tensor
    spatial_shapes: Tensor
    level_start_index: Tensor
    valid_ratios: Tensor
    level_shapes: list[tuple[int, int]]
    unpadded: bool = False

    @cached_property
    def value_padding_mask(self) -> Tensor | None:
        """The padding mask for deformable attention values, or None when no token is padding.

        (Masking nothing is the identity; skipping it saves a copy of the values per attention layer.
        Computed once per padded batch: on a GPU the test is a device-to-host synchronisation.)
        """
        if self.unpadded:
            return None
        return self.padding_mask if bool(self.padding_mask.any()) else None

    @property
    def valid_counts(self) -> Tensor:
        """Long[B]: number of non-padding tokens per image."""
        return (~self.padding_mask).sum(dim=1)


def gather_tokens(x: Tensor, indices: Tensor) -> Tensor:
    """The rows ``indices`` of every image: x Float[B, N, *D], indices Long[B, k] -> Float[B, k, *D]."""
    index = indices.view(*indices.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
    return torch.gather(x, 1, index)


def _valid_ratio(mask: Tensor) -> Tensor:
    """Bool[B, H, W] padding mask -> Float[B, 2] valid (w, h) fraction (from the first row / column)."""
    _, height, width = mask.shape
    valid_h = (~mask[:, :, 0]).sum(1)
    valid_w = (~mask[:, 0, :]).sum(1)
    return torch.stack([valid_w.float() / width, valid_h.float() / height], -1)


def spatial_shapes_tensor(level_shapes: Sequence[tuple[int, int]], device: torch.device) -> Tensor:
    """Long[L, 2] (H_l, W_l) built in the graph from (possibly symbolic) ints."""
    sizes = [
        torch.scalar_tensor(size, dtype=torch.long, device=device) for shape in level_shapes for size in shape
    ]
    return torch.stack(sizes).view(len(level_shapes), 2)


def _level_shapes(spatial_shapes: Tensor | Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """(H_l, W_l) pairs: given as ints (the model's path) or read from a Long[L, 2] tensor (eager use)."""
    if isinstance(spatial_shapes, Tensor):
        return [tuple(shape) for shape in spatial_shapes.tolist()]
    return [tuple(shape) for shape in spatial_shapes]


def flatten_levels(features: list[Tensor], masks: list[Tensor] | None, pos: list[Tensor]) -> TokenBatch:
    """Flatten per-level maps into one token sequence.

    Args:
        features: L tensors Float[B, C, H_l, W_l].
        masks: L tensors Bool[B, H_l, W_l], True on padding; None for an unpadded batch.
        pos: L tensors Float[B, C, H_l, W_l], position (+ level) embeddings.
    """
    level_shapes = [(f.shape[-2], f.shape[-1]) for f in features]
    device = features[0].device
    spatial_shapes = spatial_shapes_tensor(level_shapes, device)
    level_start_index = torch.cat((spatial_shapes.new_zeros((1,)), spatial_shapes.prod(1).cumsum(0)[:-1]))
    tokens = torch.cat([f.flatten(2).transpose(1, 2) for f in features], 1)
    if masks is None:
        padding_mask = torch.zeros(tokens.shape[:2], dtype=torch.bool, device=device)
        valid_ratios = torch.ones(tokens.shape[0], len(features), 2, device=device)
    else:
        padding_mask = torch.cat([m.flatten(1) for m in masks], 1)
        valid_ratios = torch.stack([_valid_ratio(m) for m in masks], 1)
    return TokenBatch(
        features=tokens,
        pos=torch.cat([p.flatten(2).transpose(1, 2) for p in pos], 1),
        padding_mask=padding_mask,
        spatial_shapes=spatial_shapes,
        level_start_index=level_start_index,
        valid_ratios=valid_ratios,
        level_shapes=level_shapes,
        unpadded=masks is None,
    )


def encoder_reference_points(
    spatial_shapes: Tensor | Sequence[tuple[int, int]], valid_ratios: Tensor
) -> Tensor:
    """Reference point of every token on every level (Deformable DETR encoder).

    Token centres are normalised by the valid extent of their own level, then mapped into each level
    by that level's valid ratio.

    Args:
        spatial_shapes: Long[L, 2], or L pairs (H_l, W_l) of ints; valid_ratios: Float[B, L, 2].
    Returns:
        Float[B, N, L, 2] normalised (x, y).
    """
    device = valid_ratios.device
    points = []
    for level, (height, width) in enumerate(_level_shapes(spatial_shapes)):
        # token centres i + 0.5 (exactly linspace(0.5, n - 0.5, n), which torch.export cannot size)
        ref_y, ref_x = torch.meshgrid(
            torch.arange(height, dtype=torch.float32, device=device) + 0.5,
            torch.arange(width, dtype=torch.float32, device=device) + 0.5,
            indexing="ij",
        )
        ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, level, 1] * height)
        ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, level, 0] * width)
        points.append(torch.stack((ref_x, ref_y), -1))
    return torch.cat(points, 1)[:, :, None] * valid_ratios[:, None]


def grid_proposals(
    padding_mask: Tensor, spatial_shapes: Tensor | Sequence[tuple[int, int]]
) -> tuple[Tensor, Tensor]:
    """One box proposal per token, in logit space (appendix A.4 of Deformable DETR).

    Centre = token centre normalised by the valid size of its level; size = 0.05 * 2**level. Proposals on
    padding or with a coordinate outside (0.01, 0.99) are invalid and set to +inf (sigmoid -> 1).

    Args:
        padding_mask: Bool[B, N]; spatial_shapes: Long[L, 2], or L pairs (H_l, W_l) of ints.
    Returns:
        proposals: Float[B, N, 4] inverse-sigmoid (cx, cy, w, h), +inf where invalid.
        valid: Bool[B, N] True where the proposal is valid and the token is not padding.
    """
    batch = padding_mask.shape[0]
    device = padding_mask.device
    proposals, start = [], 0
    for level, (height, width) in enumerate(_level_shapes(spatial_shapes)):
        level_mask = padding_mask[:, start : start + height * width].view(batch, height, width)
        valid_h = (~level_mask[:, :, 0]).sum(1)
        valid_w = (~level_mask[:, 0, :]).sum(1)
        grid_y, grid_x = torch.meshgrid(
            torch.arange(height, dtype=torch.float32, device=device),
            torch.arange(width, dtype=torch.float32, device=device),
            indexing="ij",
        )
        grid = torch.stack([grid_x, grid_y], -1)
        scale = torch.stack([valid_w, valid_h], 1).view(batch, 1, 1, 2)
        grid = (grid.unsqueeze(0).expand(batch, -1, -1, -1) + 0.5) / scale
        size = torch.full_like(grid, 0.05 * (2.0**level))
        proposals.append(torch.cat((grid, size), -1).view(batch, -1, 4))
        start += height * width
    proposals = torch.cat(proposals, 1)
    in_range = ((proposals > 0.01) & (proposals < 0.99)).all(-1)
    proposals = torch.log(proposals / (1 - proposals))
    valid = in_range & ~padding_mask
    proposals = proposals.masked_fill(~valid.unsqueeze(-1), float("inf"))
    return proposals, valid


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    """Logit of ``x`` clamped to [eps, 1 - eps]-safe values (the DETR-family convention)."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))
