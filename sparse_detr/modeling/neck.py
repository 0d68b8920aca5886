"""Multi-scale input projection: backbone maps -> L levels of tokens with masks and position embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .position_encoding import mask_sine_embedding
from .tokens import TokenBatch, flatten_levels

__all__ = ["MultiScaleNeck"]


def _projection(in_channels: int, hidden_dim: int, kernel_size: int, stride: int) -> nn.Sequential:
    conv = nn.Conv2d(
        in_channels, hidden_dim, kernel_size=kernel_size, stride=stride, padding=kernel_size // 2
    )
    nn.init.xavier_uniform_(conv.weight, gain=1)
    nn.init.constant_(conv.bias, 0)
    return nn.Sequential(conv, nn.GroupNorm(32, hidden_dim))


class MultiScaleNeck(nn.Module):
    """Projects the backbone maps to ``num_levels`` levels of ``hidden_dim`` channels (Deformable DETR).

    Each backbone map gets a 1x1 conv + GroupNorm(32); every further level is a stride-2 3x3 conv +
    GroupNorm, the first one applied to the last *backbone* map, later ones to the previous level.
    Level masks are the image padding mask resized by nearest interpolation; positions are the
    normalised sine embedding plus a learned per-level embedding.
    """

    def __init__(
        self,
        *,
        in_channels: list[int],
        hidden_dim: int = 256,
        num_levels: int = 4,
        channels_last: bool = False,
    ):
        """
        Args:
            in_channels: channels of the backbone maps, finest first.
            hidden_dim: token dimension C (even, divisible by 32 for GroupNorm).
            num_levels: L >= len(in_channels).
            channels_last: convolution weights in channels-last memory format, as a channels-last backbone's
                maps are (else each call converts them).
        """
        super().__init__()
        if num_levels < len(in_channels):
            raise ValueError(f"num_levels={num_levels} is smaller than the {len(in_channels)} backbone maps")
        if hidden_dim % 32 or hidden_dim % 2:
            raise ValueError(f"hidden_dim={hidden_dim} must be a multiple of 32 (GroupNorm(32) projections)")
        projections = [_projection(c, hidden_dim, 1, 1) for c in in_channels]
        extra_in = in_channels[-1]
        for _ in range(num_levels - len(in_channels)):
            projections.append(_projection(extra_in, hidden_dim, 3, 2))
            extra_in = hidden_dim
        self.level_projections = nn.ModuleList(projections)
        self.level_embed = nn.Parameter(torch.empty(num_levels, hidden_dim))
        nn.init.normal_(self.level_embed)
        self.hidden_dim = hidden_dim
        self.num_levels = num_levels
        self.num_backbone_levels = len(in_channels)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, features: list[Tensor], image_padding_mask: Tensor | None = None) -> TokenBatch:
        """
        Args:
            features: backbone maps Float[B, C_i, H_i, W_i], finest first (len == len(in_channels)).
            image_padding_mask: Bool[B, H, W] True on padded pixels, or None for an unpadded batch (same-size
                images: no mask to build or read, as in an exported graph).
        Returns:
            TokenBatch with N = sum of the L level sizes.
        """
        if len(features) != self.num_backbone_levels:
            raise ValueError(f"expected {self.num_backbone_levels} backbone maps, got {len(features)}")
        maps = [proj(f) for proj, f in zip(self.level_projections, features)]
        for level in range(self.num_backbone_levels, self.num_levels):
            source = features[-1] if level == self.num_backbone_levels else maps[-1]
            maps.append(self.level_projections[level](source))
        if image_padding_mask is None:
            masks = None
            embedding_masks = [m.new_zeros((m.shape[0], *m.shape[2:]), dtype=torch.bool) for m in maps]
        else:
            masks = [
                F.interpolate(image_padding_mask[None].float(), size=m.shape[-2:]).to(torch.bool)[0]
                for m in maps
            ]
            embedding_masks = masks
        pos = [
            mask_sine_embedding(mask, self.hidden_dim // 2).to(m.dtype)
            + self.level_embed[level].view(1, -1, 1, 1)
            for level, (m, mask) in enumerate(zip(maps, embedding_masks))
        ]
        return flatten_levels(maps, masks, pos)
