"""``MSDeformAttn``: the multi-scale deformable attention layer of Deformable DETR."""

from __future__ import annotations

import math

import torch
from torch import nn

from sparse_detr.layers.ms_deform_attn_function import BACKENDS, multi_scale_deform_attn


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention with value, offset, weight and output projections.

    Parameter names (``sampling_offsets``, ``attention_weights``, ``value_proj``, ``output_proj``) and
    the initialisation are those of the official Deformable DETR module, so official checkpoints load
    by name.

    Args:
        embed_dim: C, channels of queries, values and output.
        num_levels: L, feature levels.
        num_heads: M, attention heads; C must be divisible by M.
        num_points: P, sampling points per head and level.
        backend: see :func:`multi_scale_deform_attn` ("auto", "pytorch" or "extension").
    """

    def __init__(self, embed_dim: int = 256, num_levels: int = 4, num_heads: int = 8, num_points: int = 4,
                 backend: str = "auto"):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        self.embed_dim = embed_dim
        self.num_levels = num_levels
        self.num_heads = num_heads
        self.num_points = num_points
        self.backend = backend
        self.sampling_offsets = nn.Linear(embed_dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dim, embed_dim)
        self.output_proj = nn.Linear(embed_dim, embed_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's initialisation: zero offset weights and a bias that places the P points of
        head m on the ray at angle 2*pi*m/M at distances 1..P (max-norm scaled), uniform attention,
        Xavier value/output projections."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        directions = torch.stack([angles.cos(), angles.sin()], dim=-1)
        directions = directions / directions.abs().max(dim=-1, keepdim=True).values  # (M, 2)
        distances = torch.arange(1, self.num_points + 1, dtype=torch.float32)  # (P,)
        grid = directions[:, None, None, :] * distances[None, None, :, None]  # (M, 1, P, 2)
        grid = grid.expand(self.num_heads, self.num_levels, self.num_points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        value: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        value_padding_mask: torch.Tensor | None = None,
        return_sampling: bool = False,
    ):
        """
        Args:
            query: (N, Q, C).
            reference_points: (N, Q, L, 2) normalised (x, y) points, or (N, Q, L, 4) normalised
                (cx, cy, w, h) boxes (points are then spread within half the box).
            value: (N, S, C) flattened input levels, S = sum(H_l * W_l).
            spatial_shapes: (L, 2) int64 (H_l, W_l).
            level_start_index: (L,) int64.
            value_padding_mask: (N, S) bool, True on padding tokens (their values are zeroed), or None.
            return_sampling: also return the sampling locations and (post-softmax) attention weights.

        Returns:
            output (N, Q, C); with ``return_sampling`` the tuple (output,
            sampling_locations (N, Q, M, L, P, 2), attention_weights (N, Q, M, L, P)).
        """
        self._check_inputs(query, reference_points, value, value_padding_mask)
        batch, num_queries, _ = query.shape
        num_tokens = value.shape[1]
        heads, levels, points = self.num_heads, self.num_levels, self.num_points

        value = self.value_proj(value)
        if value_padding_mask is not None:
            value = value.masked_fill(value_padding_mask[..., None], 0.0)
        value = value.view(batch, num_tokens, heads, self.embed_dim // heads)

        offsets = self.sampling_offsets(query).view(batch, num_queries, heads, levels, points, 2)
        weights = self.attention_weights(query).view(batch, num_queries, heads, levels * points)
        weights = weights.softmax(-1).view(batch, num_queries, heads, levels, points)

        if reference_points.shape[-1] == 2:
            # offsets are in pixels of each level: normalise by (W_l, H_l)
            level_sizes_xy = spatial_shapes.flip(-1).to(offsets.dtype)  # (L, 2)
            locations = (reference_points[:, :, None, :, None, :]
                         + offsets / level_sizes_xy[None, None, None, :, None])
        else:
            box_centers = reference_points[:, :, None, :, None, :2]
            box_sizes = reference_points[:, :, None, :, None, 2:]
            locations = box_centers + offsets / points * box_sizes * 0.5

        output = multi_scale_deform_attn(value, spatial_shapes, level_start_index, locations, weights,
                                         backend=self.backend)
        output = self.output_proj(output)
        if return_sampling:
            return output, locations, weights
        return output

    def _check_inputs(self, query, reference_points, value, value_padding_mask) -> None:
        if query.dim() != 3 or query.shape[-1] != self.embed_dim:
            raise ValueError(f"query must have shape (N, Q, C={self.embed_dim}), got {tuple(query.shape)}")
        batch, num_queries, _ = query.shape
        if value.dim() != 3 or value.shape[0] != batch or value.shape[-1] != self.embed_dim:
            raise ValueError(
                f"value must have shape (N={batch}, S, C={self.embed_dim}), got {tuple(value.shape)}"
            )
        if reference_points.shape not in ((batch, num_queries, self.num_levels, 2),
                                          (batch, num_queries, self.num_levels, 4)):
            raise ValueError(
                f"reference_points must have shape (N, Q, L, 2) or (N, Q, L, 4) = "
                f"({batch}, {num_queries}, {self.num_levels}, 2|4), got {tuple(reference_points.shape)}"
            )
        if value_padding_mask is not None and (
            value_padding_mask.shape != value.shape[:2] or value_padding_mask.dtype != torch.bool
        ):
            raise ValueError(
                f"value_padding_mask must be a bool tensor of shape (N, S) = {tuple(value.shape[:2])}, "
                f"got {value_padding_mask.dtype} {tuple(value_padding_mask.shape)}"
            )

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_levels={self.num_levels}, num_heads={self.num_heads}, "
                f"num_points={self.num_points}, backend={self.backend!r}")
