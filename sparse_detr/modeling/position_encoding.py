"""Sine position embeddings of feature-map tokens and of boxes (DETR / Deformable DETR conventions)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["mask_sine_embedding", "box_sine_embedding"]


def _frequencies(num_feats: int, temperature: float, device: torch.device) -> Tensor:
    """Float[num_feats]: ``temperature ** (2 * (i // 2) / num_feats)``, one frequency per sin/cos pair."""
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * (dim_t // 2) / num_feats)


def _interleave_sin_cos(angles: Tensor) -> Tensor:
    """[..., F] angles -> [..., F]: sin of the even entries and cos of the odd ones, interleaved."""
    return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=-1).flatten(-2)


def mask_sine_embedding(
    padding_mask: Tensor, num_feats: int, temperature: float = 10000.0, scale: float = 2 * math.pi
) -> Tensor:
    """Normalised 2-d sine embedding of a map from its padding mask (DETR's ``PositionEmbeddingSine``).

    The coordinates are the cumulative count of valid pixels along each axis, normalised by the valid
    extent of each row/column and scaled to ``[0, scale]``.

    Args:
        padding_mask: Bool[B, H, W], True on padding.
        num_feats: features per axis; the embedding has ``2 * num_feats`` channels (y first, then x).
    Returns:
        Float[B, 2 * num_feats, H, W].
    """
    if padding_mask.dim() != 3 or padding_mask.dtype != torch.bool:
        raise ValueError(
            f"padding_mask must be Bool[B, H, W], got {padding_mask.dtype} {tuple(padding_mask.shape)}"
        )
    not_mask = ~padding_mask
    y_embed = not_mask.cumsum(1, dtype=torch.float32)
    x_embed = not_mask.cumsum(2, dtype=torch.float32)
    eps = 1e-6
    y_embed = (y_embed - 0.5) / (y_embed[:, -1:, :] + eps) * scale
    x_embed = (x_embed - 0.5) / (x_embed[:, :, -1:] + eps) * scale
    dim_t = _frequencies(num_feats, temperature, padding_mask.device)
    pos_x = _interleave_sin_cos(x_embed[..., None] / dim_t)
    pos_y = _interleave_sin_cos(y_embed[..., None] / dim_t)
    return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)


def box_sine_embedding(
    boxes_unactivated: Tensor, num_feats: int, temperature: float = 10000.0, scale: float = 2 * math.pi
) -> Tensor:
    """Sine embedding of boxes given in logit space (two-stage query positions of Deformable DETR).

    Args:
        boxes_unactivated: Float[B, Q, 4] inverse-sigmoid (cx, cy, w, h).
        num_feats: features per coordinate.
    Returns:
        Float[B, Q, 4 * num_feats]: per coordinate (cx, cy, w, h), ``num_feats`` interleaved sin/cos.
    """
    dim_t = _frequencies(num_feats, temperature, boxes_unactivated.device)
    angles = boxes_unactivated.sigmoid()[..., None] * scale / dim_t
    return _interleave_sin_cos(angles).flatten(2)
