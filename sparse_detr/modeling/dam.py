"""Decoder cross-attention map (DAM), its binarised scorer target, and the Corr metric.

Pure tensor functions (paper section 3.2 and appendix A.2). Token layout: the L feature levels are
flattened row-major and concatenated, level ``l`` starting at ``level_start_index[l]`` with
``spatial_shapes[l] = (H_l, W_l)``; N = sum(H_l * W_l).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "decoder_attention_map",
    "dam_target",
    "selected_token_mask",
    "attention_correlation",
]


def decoder_attention_map(
    sampling_locations: Tensor, attention_weights: Tensor, spatial_shapes: Tensor, level_start_index: Tensor
) -> Tensor:
    """Splat the decoder's deformable cross-attention weights onto the token grid.

    Every sampling point spreads its attention weight over the four tokens around it with bilinear
    weights. Like the official ``util/dam.py`` the lower corner is ``floor(loc * (W, H))`` (no half-pixel
    shift, unlike ``grid_sample``), corners outside the map are dropped, and the contributions of all
    layers, heads, queries, levels and points are summed.

    Args:
        sampling_locations: Float[B, n_layers, Q, M, L, P, 2] normalised (x, y) in [0, 1] per level.
        attention_weights: Float[B, n_layers, Q, M, L, P].
        spatial_shapes: Long[L, 2] (H_l, W_l).
        level_start_index: Long[L] first flat token index of each level.
    Returns:
        Float[B, N] attention mass per token.
    """
    if sampling_locations.dim() != 7 or sampling_locations.shape[-1] != 2:
        raise ValueError(
            f"decoder_attention_map: sampling_locations must be [B, n_layers, Q, M, L, P, 2], got "
            f"{tuple(sampling_locations.shape)}"
        )
    if attention_weights.shape != sampling_locations.shape[:-1]:
        raise ValueError(
            f"decoder_attention_map: attention_weights must be {tuple(sampling_locations.shape[:-1])} "
            f"(sampling_locations without the xy axis), got {tuple(attention_weights.shape)}"
        )
    num_levels = sampling_locations.shape[4]
    if spatial_shapes.shape != (num_levels, 2) or level_start_index.shape != (num_levels,):
        raise ValueError(
            f"decoder_attention_map: expected spatial_shapes [{num_levels}, 2] and level_start_index "
            f"[{num_levels}], got {tuple(spatial_shapes.shape)} and {tuple(level_start_index.shape)}"
        )
    batch_size = sampling_locations.shape[0]
    num_tokens = int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum())
    device = sampling_locations.device
    spatial_shapes = spatial_shapes.to(device)
    level_start_index = level_start_index.to(device)

    # Put the level axis last so per-level constants broadcast: [..., L, P, 2] -> [..., P, L, 2].
    locations = sampling_locations.transpose(-3, -2).reshape(batch_size, -1, num_levels, 2)
    weights = attention_weights.transpose(-2, -1).reshape(batch_size, -1, num_levels)
    width_height = spatial_shapes.flip(-1)  # (W_l, H_l) matches the (x, y) order of the locations
    pixel = locations * width_height
    low = pixel.floor()
    frac = pixel - low  # bilinear weight of the high corner, per axis
    low = low.to(torch.int64)

    attention_map = weights.new_zeros(batch_size, num_tokens)
    for dx in (0, 1):
        for dy in (0, 1):
            col = low[..., 0] + dx
            row = low[..., 1] + dy
            bilinear = (frac[..., 0] if dx else 1 - frac[..., 0]) * (frac[..., 1] if dy else 1 - frac[..., 1])
            inside = (col >= 0) & (col < width_height[:, 0]) & (row >= 0) & (row < width_height[:, 1])
            flat_index = torch.where(inside, level_start_index + row * spatial_shapes[:, 1] + col, 0)
            contribution = torch.where(inside, weights * bilinear, 0)
            attention_map.scatter_add_(1, flat_index.flatten(1), contribution.flatten(1))
    return attention_map


def dam_target(attention_map: Tensor, padding_mask: Tensor, num_kept: Tensor) -> Tensor:
    """Binarised DAM: the tokens the scoring network should learn to select.

    Padded tokens get the batch minimum minus one (official behaviour), then the top ``num_kept[i]``
    tokens of image ``i`` are positive. ``num_kept`` is capped at the image's number of valid tokens, so
    padding is never a positive (the official ``int(valid * rho) + 1`` exceeds it only when rho = 1).

    Args:
        attention_map: Float[B, N] from :func:`decoder_attention_map`.
        padding_mask: Bool[B, N], True on padding tokens.
        num_kept: Long[B] number of tokens kept per image.
    Returns:
        Bool[B, N] target, exactly ``min(num_kept[i], valid_i)`` True entries in row ``i``.
    """
    if padding_mask.shape != attention_map.shape:
        raise ValueError(
            f"dam_target: padding_mask must be {tuple(attention_map.shape)} like attention_map, got "
            f"{tuple(padding_mask.shape)}"
        )
    if num_kept.shape != attention_map.shape[:1]:
        raise ValueError(
            f"dam_target: num_kept must be [{attention_map.shape[0]}], got {tuple(num_kept.shape)}"
        )
    num_kept = torch.minimum(num_kept.to(attention_map.device), (~padding_mask).sum(1))
    filled = attention_map.masked_fill(padding_mask, attention_map.min() - 1)
    max_kept = int(num_kept.max()) if num_kept.numel() else 0
    top_indices = filled.topk(max_kept, dim=1).indices
    is_kept = torch.arange(max_kept, device=filled.device) < num_kept[:, None]
    target = torch.zeros_like(padding_mask)
    return target.scatter_(1, top_indices, is_kept)


def selected_token_mask(selected_indices: Tensor, num_tokens: int, num_kept: Tensor | None = None) -> Tensor:
    """Boolean token mask of the selected tokens.

    Args:
        selected_indices: Long[B, k] flat token indices (the first ``num_kept[i]`` are image ``i``'s).
        num_tokens: N.
        num_kept: optional Long[B]; when given only the first ``num_kept[i]`` indices of row ``i`` count,
            otherwise all k (the official Corr uses all k).
    Returns:
        Bool[B, N].
    """
    batch_size, k = selected_indices.shape
    keep = torch.ones_like(selected_indices, dtype=torch.bool)
    if num_kept is not None:
        keep = torch.arange(k, device=selected_indices.device) < num_kept.to(selected_indices.device)[:, None]
    mask = torch.zeros(batch_size, num_tokens, dtype=torch.bool, device=selected_indices.device)
    return mask.scatter_(1, selected_indices, keep)


def attention_correlation(attention_map: Tensor, selected_mask: Tensor, level_start_index: Tensor) -> Tensor:
    """The paper's Corr: share of the decoder's attention mass that falls on the selected tokens.

    Args:
        attention_map: Float[B, N] from :func:`decoder_attention_map` (padding not masked, as official).
        selected_mask: Bool[B, N] from :func:`selected_token_mask`.
        level_start_index: Long[L].
    Returns:
        Float[B, 1 + L]: column 0 over all tokens, column 1 + l over the tokens of level l
        (NaN for a level that receives no attention at all).
    """
    if selected_mask.shape != attention_map.shape:
        raise ValueError(
            f"attention_correlation: selected_mask must be {tuple(attention_map.shape)}, got "
            f"{tuple(selected_mask.shape)}"
        )
    num_tokens = attention_map.shape[1]
    starts = level_start_index.to(attention_map.device)
    level_of_token = torch.bucketize(torch.arange(num_tokens, device=starts.device), starts, right=True) - 1
    num_levels = starts.numel()
    hit = attention_map * selected_mask

    def per_level_sum(values: Tensor) -> Tensor:
        index = level_of_token.expand_as(values)
        return values.new_zeros(values.shape[0], num_levels).scatter_add_(1, index, values)

    total = torch.cat([attention_map.sum(1, keepdim=True), per_level_sum(attention_map)], dim=1)
    selected = torch.cat([hit.sum(1, keepdim=True), per_level_sum(hit)], dim=1)
    return selected / total
