"""Decoder query initialisation: two-stage top-k from the encoder output, or learned queries."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .heads import PredictionHeads
from .position_encoding import box_sine_embedding
from .tokens import gather_tokens

__all__ = ["DecoderQueries", "TokenProjection", "TwoStageQueryInit", "LearnedQueryInit", "two_stage_queries"]


@dataclass
class DecoderQueries:
    """Inputs of the decoder.

    Attributes:
        queries: Float[B, Q, C] initial content queries (``tgt``).
        query_pos: Float[B, Q, C] query position embedding.
        reference: Float[B, Q, 4] boxes (two-stage) or [B, Q, 2] points, in [0, 1].
        token_indices: Long[B, Q] memory tokens the queries come from (two-stage) or None.
    """

    queries: Tensor
    query_pos: Tensor
    reference: Tensor
    token_indices: Tensor | None = None


class TokenProjection(nn.Module):
    """Linear + LayerNorm applied to (masked) tokens before the two-stage head and the DAM scoring network."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: Tensor, valid: Tensor) -> Tensor:
        """tokens: Float[B, N, C]; valid: Bool[B, N] (invalid tokens are zeroed first) -> Float[B, N, C]."""
        return self.norm(self.linear(tokens.masked_fill(~valid.unsqueeze(-1), 0.0)))


class TwoStageQueryInit(nn.Module):
    """Top-Q tokens of the two-stage head become the decoder queries (Deformable DETR two-stage).

    ``class_specific=True`` ranks tokens by their best class logit (Efficient DETR's specific head),
    else by logit 0. ``from_memory=True`` takes the content queries from the encoder memory at the
    chosen tokens (Efficient DETR) and the position from the embedded proposal box; otherwise both come
    from the embedded proposal box.
    """

    two_stage = True

    def __init__(
        self, *, dim: int = 256, num_queries: int = 300, from_memory: bool = True, class_specific: bool = True
    ):
        super().__init__()
        self.num_queries = num_queries
        self.from_memory = from_memory
        self.class_specific = class_specific
        self.dim = dim
        out_dim = dim if from_memory else 2 * dim
        self.pos_proj = nn.Linear(2 * dim, out_dim)
        self.pos_norm = nn.LayerNorm(out_dim)

    def select(self, proposal_logits: Tensor) -> Tensor:
        """Long[B, Q]: the top-Q tokens by two-stage score (Q capped at N), descending.

        Args:
            proposal_logits: Float[B, N, K] two-stage class logits.
        """
        scores = proposal_logits.max(-1).values if self.class_specific else proposal_logits[..., 0]
        return torch.topk(scores, min(self.num_queries, scores.shape[1]), dim=1).indices

    def forward(self, memory: Tensor, token_indices: Tensor, boxes_unactivated: Tensor) -> DecoderQueries:
        """
        Args:
            memory: Float[B, N, C] encoder output.
            token_indices: Long[B, Q] from :meth:`select`.
            boxes_unactivated: Float[B, Q, 4] the two-stage boxes of those tokens, in logit space.
        """
        boxes = boxes_unactivated.detach()
        pos = self.pos_norm(self.pos_proj(box_sine_embedding(boxes, self.dim // 2)))
        if self.from_memory:
            queries = gather_tokens(memory, token_indices)
            query_pos = pos
        else:
            query_pos, queries = torch.split(pos, self.dim, dim=2)
        return DecoderQueries(
            queries=queries, query_pos=query_pos, reference=boxes.sigmoid(), token_indices=token_indices
        )


class LearnedQueryInit(nn.Module):
    """Learned queries and position embeddings; reference points predicted from the positions."""

    two_stage = False

    def __init__(self, *, dim: int = 256, num_queries: int = 300):
        super().__init__()
        self.num_queries = num_queries
        self.dim = dim
        self.query_embed = nn.Embedding(num_queries, 2 * dim)
        self.reference_points = nn.Linear(dim, 2)
        nn.init.xavier_uniform_(self.reference_points.weight, gain=1.0)
        nn.init.constant_(self.reference_points.bias, 0.0)

    def forward(self, batch_size: int) -> DecoderQueries:
        query_pos, queries = torch.split(self.query_embed.weight, self.dim, dim=1)
        query_pos = query_pos.unsqueeze(0).expand(batch_size, -1, -1)
        queries = queries.unsqueeze(0).expand(batch_size, -1, -1)
        return DecoderQueries(
            queries=queries, query_pos=query_pos, reference=self.reference_points(query_pos).sigmoid()
        )


def two_stage_queries(
    query_init: TwoStageQueryInit,
    heads: PredictionHeads,
    projected: Tensor,
    memory: Tensor,
    proposals: Tensor,
    with_predictions: bool,
) -> tuple[DecoderQueries, dict[str, Tensor] | None]:
    """Two-stage decoder queries: the top-Q encoder tokens of the two-stage head, boxes from their proposals.

    Args:
        query_init: ranks the tokens and turns the chosen ones into queries.
        heads: holds the two-stage class / box head.
        projected: Float[B, N, C] the encoder memory through the ``TokenProjection``.
        memory: Float[B, N, C] the encoder output.
        proposals: Float[B, N, 4] grid proposals in logit space (+inf where invalid).
        with_predictions: also return the two-stage head's ``{"pred_logits", "pred_boxes"}`` on all N tokens
            (its loss); otherwise only the Q chosen tokens' boxes are regressed.
    """
    site = heads.two_stage_site()
    proposal_logits = heads.class_heads[site](projected)
    token_indices = query_init.select(proposal_logits)
    predictions = None
    if with_predictions:
        proposal_boxes = heads.box_heads[site](projected) + proposals
        predictions = {"pred_logits": proposal_logits, "pred_boxes": proposal_boxes.sigmoid()}
        query_boxes = gather_tokens(proposal_boxes, token_indices)
    else:
        query_boxes = heads.box_heads[site](gather_tokens(projected, token_indices))
        query_boxes = query_boxes + gather_tokens(proposals, token_indices)
    return query_init(memory, token_indices, query_boxes), predictions
