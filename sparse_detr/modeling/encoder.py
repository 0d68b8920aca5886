"""Sparse deformable encoder: refines only the selected tokens, every token stays a key/value."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from sparse_detr.layers import MSDeformAttn
from sparse_detr.utils.shapes import known_true

from .feed_forward import FeedForward
from .layer_stack import DeformableLayerStack
from .registry import SPARSE_ENCODER_REGISTRY
from .tokens import TokenBatch, encoder_reference_points, gather_tokens

__all__ = ["SparseEncoderLayer", "SparseDeformableEncoder", "EncoderOutput"]


@dataclass
class EncoderOutput:
    """Result of the sparse encoder.

    Attributes:
        memory: Float[B, N, C] all tokens after the last layer (unselected tokens unchanged).
        layer_queries: per layer, Float[B, k, C] the refined queries (k = N when dense).
        sampling_locations: Float[B, n_layers, k, M, L, P, 2] or None when not requested.
        attention_weights: Float[B, n_layers, k, M, L, P] or None when not requested.
    """

    memory: Tensor
    layer_queries: list[Tensor]
    sampling_locations: Tensor | None = None
    attention_weights: Tensor | None = None


class SparseEncoderLayer(nn.Module):
    """Deformable self-attention of the queries over all tokens, then FFN (Post-LN or Pre-LN).

    At inference (no autograd) many queries are refined in chunks of ``inference_chunk_size`` against
    values projected once: the same result, with every temporary (the FFN's hidden layer above all)
    small enough to stay in cache and in the allocator's reused memory. The choice is made on the
    sizes only; with symbolic sizes (``torch.export``) it is made only where it holds for every size,
    else the unchunked path is traced.
    """

    inference_chunk_size = 2048

    def __init__(
        self,
        *,
        dim: int,
        ffn_dim: int,
        num_heads: int,
        num_levels: int,
        num_points: int,
        dropout: float,
        pre_norm: bool,
    ):
        super().__init__()
        self.self_attn = MSDeformAttn(dim, num_levels, num_heads, num_points)
        self.attn_dropout = nn.Dropout(dropout)
        self.attn_norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim, dropout)
        self.ffn_norm = nn.LayerNorm(dim)
        self.pre_norm = pre_norm

    def forward(
        self,
        queries: Tensor,
        query_pos: Tensor,
        reference_points: Tensor,
        tokens: Tensor,
        token_batch: TokenBatch,
        return_sampling: bool,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """
        Args:
            queries: Float[B, k, C]; query_pos: Float[B, k, C]; reference_points: Float[B, k, L, 2].
            tokens: Float[B, N, C] the current memory (keys/values).
        Returns:
            (refined queries Float[B, k, C], sampling locations or None, attention weights or None).
        """
        num_queries = queries.shape[1]
        chunked = (
            not torch.is_grad_enabled()
            and known_true(num_queries > self.inference_chunk_size)
            and not self.self_attn.projects_after_sampling(num_queries, tokens.shape[1])
        )
        geometry = dict(
            spatial_shapes=token_batch.spatial_shapes,
            level_start_index=token_batch.level_start_index,
            return_sampling=return_sampling,
            level_shapes=token_batch.level_shapes,
        )
        if not chunked:
            attend = partial(
                self.self_attn, value=tokens, value_padding_mask=token_batch.value_padding_mask, **geometry
            )
            return self._refine(attend, queries, query_pos, reference_points, return_sampling)
        projected = self.self_attn.project_values(tokens, token_batch.value_padding_mask)
        attend = partial(self.self_attn.attend, projected_value=projected, **geometry)
        chunks = [
            self._refine(attend, *chunk, return_sampling)
            for chunk in zip(*(x.split(self.inference_chunk_size, 1) for x in (queries, query_pos,
                                                                              reference_points)))
        ]
        refined, locations, weights = zip(*chunks)
        if not return_sampling:
            return torch.cat(refined, 1), None, None
        return torch.cat(refined, 1), torch.cat(locations, 1), torch.cat(weights, 1)

    def _refine(
        self, attend, queries: Tensor, query_pos: Tensor, reference_points: Tensor, return_sampling: bool
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Attention (``attend(query, reference_points)``) + FFN on one set of queries."""
        attn_in = self.attn_norm(queries) if self.pre_norm else queries
        attn = attend(attn_in + query_pos, reference_points)
        locations = weights = None
        if return_sampling:
            attn, locations, weights = attn
        if self.pre_norm:
            queries = queries + self.attn_dropout(attn)
            queries = queries + self.ffn(self.ffn_norm(queries))
        else:
            queries = self.attn_norm(queries + self.attn_dropout(attn))
            queries = self.ffn_norm(queries + self.ffn(queries))
        return queries, locations, weights


@SPARSE_ENCODER_REGISTRY.register()
class SparseDeformableEncoder(DeformableLayerStack):
    """Stack of :class:`SparseEncoderLayer`.

    Sparse mode (``selected_indices`` given): the k selected tokens are the queries of every layer; their
    features keep being refined from layer to layer, and after each layer the first ``num_kept[i]``
    queries of image i are written back into the memory, which stays the key/value set of the next
    layer. Dense mode (``selected_indices=None``): every token is a query (Deformable DETR). With zero
    layers the memory is ``features + pos`` (the "no encoder" ablation of the paper).
    """

    layer_class = SparseEncoderLayer
    min_layers = 0  # zero layers: the "no encoder" ablation

    def __init__(self, *, pre_norm: bool, **sizes):
        """``pre_norm``: Pre-LN layers and a final norm; ``sizes``: those of :class:`DeformableLayerStack`."""
        super().__init__(**sizes, layer_options={"pre_norm": pre_norm})
        self.final_norm = nn.LayerNorm(self.dim) if pre_norm and self.num_layers else None

    def forward(
        self,
        tokens: TokenBatch,
        selected_indices: Tensor | None = None,
        num_kept: Tensor | None = None,
        return_sampling: bool = False,
    ) -> EncoderOutput:
        """
        Args:
            tokens: the flattened multi-scale tokens.
            selected_indices: Long[B, k] tokens to refine, or None (dense).
            num_kept: Long[B] number of leading selected tokens of each image written back (default: all k).
            return_sampling: also return the per-layer sampling locations / attention weights.
        """
        if self.num_layers == 0:
            return EncoderOutput(memory=tokens.features + tokens.pos, layer_queries=[])
        memory = tokens.features
        reference_points = encoder_reference_points(tokens.level_shapes, tokens.valid_ratios)
        if selected_indices is None:
            query_pos = tokens.pos
        else:
            reference_points = gather_tokens(reference_points, selected_indices)
            query_pos = gather_tokens(tokens.pos, selected_indices)
            queries = gather_tokens(memory, selected_indices)
            write_back = None  # Bool[B, k, 1] which queries update the memory; None = all of them
            # unpadded images all have N valid tokens, so the same count: no test on the data needed
            padded = tokens.value_padding_mask is not None
            if num_kept is not None and padded and bool((num_kept < selected_indices.shape[1]).any()):
                positions = torch.arange(selected_indices.shape[1], device=selected_indices.device)
                write_back = (positions[None] < num_kept[:, None]).unsqueeze(-1)
            scatter_index = selected_indices.unsqueeze(-1).expand(-1, -1, memory.shape[-1])
            in_place = not torch.is_grad_enabled()
            if in_place:  # inference: write back into one private copy instead of a new memory per layer
                memory = memory.clone()

        layer_queries, locations, weights = [], [], []
        for layer in self.layers:
            if selected_indices is None:
                memory, loc, w = layer(memory, query_pos, reference_points, memory, tokens, return_sampling)
                layer_queries.append(memory)
            else:
                queries, loc, w = layer(queries, query_pos, reference_points, memory, tokens, return_sampling)
                layer_queries.append(queries)
                update = queries
                if write_back is not None:
                    # queries beyond num_kept[i] keep being refined but leave the memory unchanged
                    update = torch.where(write_back, queries, torch.gather(memory, 1, scatter_index))
                memory = (
                    memory.scatter_(1, scatter_index, update)
                    if in_place
                    else memory.scatter(1, scatter_index, update)
                )
            locations.append(loc)
            weights.append(w)
        if self.final_norm is not None:
            memory = self.final_norm(memory)
        return EncoderOutput(
            memory=memory,
            layer_queries=layer_queries,
            sampling_locations=torch.stack(locations, 1) if return_sampling else None,
            attention_weights=torch.stack(weights, 1) if return_sampling else None,
        )
