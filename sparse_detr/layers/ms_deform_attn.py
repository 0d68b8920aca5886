"""``MSDeformAttn``: the multi-scale deformable attention layer of Deformable DETR."""

from __future__ import annotations

import math
from functools import partial

import torch
from torch import nn

from sparse_detr.layers.ms_deform_attn_function import BACKENDS, multi_scale_deform_attn
from sparse_detr.utils.shapes import known_true

# cost of one multiply-add of the bilinear gather relative to one of a dense matrix product, in inference
# and in training (forward + backward: the backward gathers and scatters), measured on x86 CPUs by
# benchmarks/bench_projection_order.py; only decides the cheaper of two exact paths
_SAMPLING_COST_PER_MAC = {False: 3, True: 6}


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
        level_shapes: list[tuple[int, int]] | None = None,
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
            level_shapes: ``spatial_shapes`` as L pairs of ints (read from the map shapes), so that the
                tensor's data is never read (see :func:`multi_scale_deform_attn`); None = read it.

        Returns:
            output (N, Q, C); with ``return_sampling`` the tuple (output,
            sampling_locations (N, Q, M, L, P, 2), attention_weights (N, Q, M, L, P)).
        """
        self._check_inputs(query, reference_points, value, value_padding_mask)
        if self.projects_after_sampling(query.shape[1], value.shape[1]):
            return self._attend_unprojected(
                query, reference_points, value, spatial_shapes, level_start_index, value_padding_mask,
                return_sampling, level_shapes,
            )
        return self.attend(query, reference_points, self.project_values(value, value_padding_mask),
                           spatial_shapes, level_start_index, return_sampling, level_shapes)

    def projects_after_sampling(self, num_queries: int, num_tokens: int) -> bool:
        """Whether :meth:`forward` samples the raw values and projects afterwards (see below).

        The value projection is linear and bilinear sampling + attention weighting is a weighted sum,
        so they commute: projecting the Q * M sampled vectors instead of the S tokens gives the same
        output. Sampling the full C channels per head costs ~L * P * 4 / Dh times more than sampling
        the projected head slice, so it only pays when the queries are few against the tokens, as in
        the decoder's cross-attention (300 queries, ~20k tokens) and the encoder's below rho ~0.14 in
        inference; in CPU training too, where the dearer backward moves the switch to rho ~0.08. CUDA
        training keeps the usual order: the folded layout's backward adds M times more atomics into one
        value slice. So do exported graphs (each attention one plugin node, the layout runtimes expect)
        and the JIT tracer (FLOP counts: fvcore, Detectron2's ``analyze_model``, which then count the
        paper's layers). With symbolic sizes (``torch.compile``) it answers True only where that holds
        for every size the graph accepts.
        """
        if torch.jit.is_tracing() or torch.compiler.is_exporting():
            return False
        if torch.is_grad_enabled() and self.value_proj.weight.is_cuda:
            return False
        # multiply-adds per channel of one (query, head): its bilinear samples, then its projection row
        samples = self.num_levels * self.num_points * 4
        sampling_cost = _SAMPLING_COST_PER_MAC[torch.is_grad_enabled()]
        per_channel = samples * sampling_cost + self.embed_dim // self.num_heads
        return known_true(num_queries * self.num_heads * per_channel < num_tokens * self.embed_dim)

    def project_values(self, value: torch.Tensor, value_padding_mask: torch.Tensor | None = None):
        """(N, S, C) tokens -> (N, S, M, C / M) per-head values, zero on padding tokens."""
        batch, num_tokens, _ = value.shape
        value = self.value_proj(value)
        if value_padding_mask is not None:
            value = value.masked_fill(value_padding_mask[..., None], 0.0)
        return value.view(batch, num_tokens, self.num_heads, self.embed_dim // self.num_heads)

    def attend(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        projected_value: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
        return_sampling: bool = False,
        level_shapes: list[tuple[int, int]] | None = None,
    ):
        """:meth:`forward` on values already projected by :meth:`project_values` ((N, S, M, C / M)).

        Lets a caller project the values once and attend with several chunks of queries.
        """
        locations, weights = self.sampling(query, reference_points, spatial_shapes)
        output = multi_scale_deform_attn(projected_value, spatial_shapes, level_start_index, locations,
                                         weights, backend=self.backend, level_shapes=level_shapes)
        output = self.output_proj(output)
        if return_sampling:
            return output, locations, weights
        return output

    def sampling(self, query: torch.Tensor, reference_points: torch.Tensor, spatial_shapes: torch.Tensor):
        """Sampling locations (N, Q, M, L, P, 2) and softmax-ed attention weights (N, Q, M, L, P)."""
        batch, num_queries, _ = query.shape
        heads, levels, points = self.num_heads, self.num_levels, self.num_points
        offsets = self.sampling_offsets(query).view(batch, num_queries, heads, levels * points * 2)
        weights = self.attention_weights(query).view(batch, num_queries, heads, levels * points)
        weights = weights.softmax(-1).view(batch, num_queries, heads, levels, points)
        # locations = origin + offsets * scale, origin and scale given per (level, point, xy) in full: with
        # a contiguous last dim of L * P * 2 in every operand the op runs vectorised, where broadcasting
        # over points and heads inside it ran element by element (10x slower)
        if reference_points.shape[-1] == 2:
            # offsets are in pixels of each level: normalise by (W_l, H_l)
            origin = reference_points[:, :, None, :, None, :]
            scale = spatial_shapes.flip(-1).to(offsets.dtype).reciprocal()[:, None, :]
        else:
            origin = reference_points[:, :, None, :, None, :2]
            scale = reference_points[:, :, None, :, None, 2:] * (0.5 / points)
        origin, scale = (x.expand(*x.shape[:-3], levels, points, 2).flatten(-3) for x in (origin, scale))
        locations = torch.addcmul(origin, offsets, scale).view(batch, num_queries, heads, levels, points, 2)
        return locations, weights

    def _attend_unprojected(self, query, reference_points, value, spatial_shapes, level_start_index,
                            value_padding_mask, return_sampling, level_shapes=None):
        """:meth:`forward` sampling the raw (N, S, C) values per head, then projecting each head's sum.

        The projection bias reaches a sample only as far as the projected values would (not outside the
        map, not on padding): its factor per (query, head) is the attention-weighted bilinear coverage,
        the same sampling applied to a one-channel map of ones (zero on padding).
        """
        batch, num_queries, _ = query.shape
        num_tokens = value.shape[1]
        heads, channels = self.num_heads, self.embed_dim
        locations, weights = self.sampling(query, reference_points, spatial_shapes)
        if value_padding_mask is None:
            coverage_map = value.new_ones(batch, num_tokens, 1, 1)
        else:
            value = value.masked_fill(value_padding_mask[..., None], 0.0)
            coverage_map = (~value_padding_mask).to(value.dtype)[:, :, None, None]
        # every head samples all C channels: the heads become extra queries of one head
        sample = partial(
            multi_scale_deform_attn,
            spatial_shapes=spatial_shapes,
            level_start_index=level_start_index,
            sampling_locations=locations.reshape(batch, num_queries * heads, 1, *locations.shape[3:]),
            attention_weights=weights.reshape(batch, num_queries * heads, 1, *weights.shape[3:]),
            backend=self.backend,
            level_shapes=level_shapes,
        )
        sampled = sample(value[:, :, None]).view(batch, num_queries, heads, channels)
        coverage = sample(coverage_map).view(batch, num_queries, heads, 1)
        projection = self.value_proj.weight.view(heads, channels // heads, channels)  # (M, C / M, C)
        output = torch.einsum("nqmc,mdc->nqmd", sampled, projection)
        output = output + coverage * self.value_proj.bias.view(heads, channels // heads)
        output = self.output_proj(output.reshape(batch, num_queries, channels))
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
