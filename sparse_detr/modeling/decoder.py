"""Deformable DETR decoder with iterative box refinement, returning its cross-attention sampling."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sparse_detr.layers import MSDeformAttn

from .feed_forward import FeedForward
from .layer_stack import DeformableLayerStack
from .tokens import TokenBatch, inverse_sigmoid

__all__ = ["DeformableDecoderLayer", "DeformableDecoder", "DecoderOutput"]


@dataclass
class DecoderOutput:
    """Result of the decoder.

    Attributes:
        hidden_states: per layer Float[B, Q, C].
        references: per layer, the reference Float[B, Q, 4|2] in [0, 1] that layer started from
            (``references[0]`` is the initial reference).
        sampling_locations: Float[B, n_layers, Q, M, L, P, 2] cross-attention sampling locations.
        attention_weights: Float[B, n_layers, Q, M, L, P].
    """

    hidden_states: list[Tensor]
    references: list[Tensor]
    sampling_locations: Tensor
    attention_weights: Tensor


class DeformableDecoderLayer(nn.Module):
    """Self-attention among queries, deformable cross-attention to the memory, FFN (Post-LN)."""

    def __init__(
        self, *, dim: int, ffn_dim: int, num_heads: int, num_levels: int, num_points: int, dropout: float
    ):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.self_attn_dropout = nn.Dropout(dropout)
        self.self_attn_norm = nn.LayerNorm(dim)
        self.cross_attn = MSDeformAttn(dim, num_levels, num_heads, num_points)
        self.cross_attn_dropout = nn.Dropout(dropout)
        self.cross_attn_norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim, dropout)
        self.ffn_norm = nn.LayerNorm(dim)

    def forward(
        self, queries: Tensor, query_pos: Tensor, reference_points: Tensor, memory: Tensor, tokens: TokenBatch
    ) -> tuple[Tensor, Tensor, Tensor]:
        """
        Args:
            queries, query_pos: Float[B, Q, C]; reference_points: Float[B, Q, L, 4|2]; memory: Float[B, N, C].
        Returns:
            queries Float[B, Q, C], sampling locations [B, Q, M, L, P, 2], attention weights
            [B, Q, M, L, P].
        """
        q = k = queries + query_pos
        attn = self.self_attn(q, k, queries, need_weights=False)[0]
        queries = self.self_attn_norm(queries + self.self_attn_dropout(attn))
        attn, locations, weights = self.cross_attn(
            queries + query_pos,
            reference_points,
            memory,
            tokens.spatial_shapes,
            tokens.level_start_index,
            value_padding_mask=tokens.value_padding_mask,
            return_sampling=True,
            level_shapes=tokens.level_shapes,
        )
        queries = self.cross_attn_norm(queries + self.cross_attn_dropout(attn))
        queries = self.ffn_norm(queries + self.ffn(queries))
        return queries, locations, weights


class DeformableDecoder(DeformableLayerStack):
    """Stack of :class:`DeformableDecoderLayer`; with ``box_heads`` the reference boxes are refined per layer.

    Refinement: ``reference <- sigmoid(box_head_l(h_l) + inverse_sigmoid(reference))``, detached between
    layers (2-d references only move their centre).
    """

    layer_class = DeformableDecoderLayer
    min_layers = 1

    def forward(
        self,
        queries: Tensor,
        query_pos: Tensor,
        reference: Tensor,
        memory: Tensor,
        tokens: TokenBatch,
        box_heads: Sequence[nn.Module] | None = None,
    ) -> DecoderOutput:
        """
        Args:
            queries, query_pos: Float[B, Q, C]; reference: Float[B, Q, 4] boxes or [B, Q, 2] points in [0, 1].
            memory: Float[B, N, C] encoder output; tokens: geometry of the memory (shapes, masks, ratios).
            box_heads: one box head per layer for iterative refinement, or None.
        """
        box_ratios = torch.cat([tokens.valid_ratios, tokens.valid_ratios], -1)
        hidden_states, references, locations, weights = [], [], [], []
        for lid, layer in enumerate(self.layers):
            references.append(reference)
            ratios = box_ratios if reference.shape[-1] == 4 else tokens.valid_ratios
            reference_input = reference[:, :, None] * ratios[:, None]
            queries, loc, w = layer(queries, query_pos, reference_input, memory, tokens)
            hidden_states.append(queries)
            locations.append(loc)
            weights.append(w)
            if box_heads is not None:
                offsets = box_heads[lid](queries)
                if reference.shape[-1] == 4:
                    new_reference = offsets + inverse_sigmoid(reference)
                else:
                    new_reference = torch.cat(
                        [offsets[..., :2] + inverse_sigmoid(reference), offsets[..., 2:]], -1
                    )
                reference = new_reference.sigmoid().detach()
        return DecoderOutput(
            hidden_states=hidden_states,
            references=references,
            sampling_locations=torch.stack(locations, 1),
            attention_weights=torch.stack(weights, 1),
        )
