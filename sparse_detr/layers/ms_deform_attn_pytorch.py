"""Multi-scale deformable attention in plain PyTorch (``grid_sample`` based; runs on any device)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ms_deform_attn_pytorch(
    value: torch.Tensor,
    level_shapes: list[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Bilinear sampling of every level with ``grid_sample`` followed by the attention-weighted sum.

    Args:
        value: (N, S, M, D), S = sum of H_l * W_l over the levels.
        level_shapes: L pairs (H_l, W_l) as Python ints.
        sampling_locations: (N, Q, M, L, P, 2) normalised (x, y); (0, 0) is the top-left corner of
            the map, (1, 1) the bottom-right one. Outside points read zeros.
        attention_weights: (N, Q, M, L, P).

    Returns:
        (N, Q, M * D).
    """
    batch, _, num_heads, head_dim = value.shape
    _, num_queries, _, num_levels, num_points, _ = sampling_locations.shape
    values_per_level = value.split([height * width for height, width in level_shapes], dim=1)
    grids = 2 * sampling_locations - 1  # grid_sample's coordinates are in [-1, 1]
    sampled_per_level = []
    for level, (height, width) in enumerate(level_shapes):
        # (N, H*W, M, D) -> (N*M, D, H, W)
        level_value = values_per_level[level].flatten(2).transpose(1, 2).reshape(
            batch * num_heads, head_dim, height, width
        )
        # (N, Q, M, P, 2) -> (N*M, Q, P, 2)
        level_grid = grids[:, :, :, level].transpose(1, 2).flatten(0, 1)
        # (N*M, D, Q, P)
        sampled_per_level.append(
            F.grid_sample(level_value, level_grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        )
    # (N, Q, M, L, P) -> (N*M, 1, Q, L*P)
    weights = attention_weights.transpose(1, 2).reshape(
        batch * num_heads, 1, num_queries, num_levels * num_points
    )
    # (N*M, D, Q, L*P) weighted and summed over the L*P samples -> (N, M*D, Q)
    output = (torch.stack(sampled_per_level, dim=-2).flatten(-2) * weights).sum(-1)
    return output.view(batch, num_heads * head_dim, num_queries).transpose(1, 2).contiguous()
