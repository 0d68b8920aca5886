"""The typed output of the network (``SparseDETR.predict``), read by the criterion and the analysis.

Per-site predictions stay the DETR-family two-key dict ``{"pred_logits": Float[B, Q, K], "pred_boxes":
Float[B, Q, 4]}`` (cxcywh in [0, 1]) that the heads return and the matcher consumes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

from .query_selection import DecoderQueries
from .scorers import TokenSelection
from .tokens import TokenBatch

__all__ = ["TokenGeometry", "DecoderSampling", "NetworkInternals", "SparseDETROutput"]


@dataclass
class TokenGeometry:
    """Layout of the flattened multi-scale tokens (features left out).

    Attributes:
        padding_mask: Bool[B, N], True on padding tokens.
        spatial_shapes: Long[L, 2] (H_l, W_l).
        level_start_index: Long[L] first flat token index of each level.
    """

    padding_mask: Tensor
    spatial_shapes: Tensor
    level_start_index: Tensor

    @classmethod
    def of(cls, tokens: TokenBatch) -> TokenGeometry:
        return cls(tokens.padding_mask, tokens.spatial_shapes, tokens.level_start_index)

    @property
    def valid_counts(self) -> Tensor:
        """Long[B]: number of non-padding tokens per image."""
        return (~self.padding_mask).sum(dim=1)


@dataclass
class DecoderSampling:
    """Where the decoder's deformable cross-attention sampled the tokens (every layer).

    Attributes:
        locations: Float[B, D, Q, M, L, P, 2] normalised (x, y) per level.
        weights: Float[B, D, Q, M, L, P] attention weights.
    """

    locations: Tensor
    weights: Tensor


@dataclass
class NetworkInternals:
    """Intermediate tensors kept for analysis and parity checks (``predict(with_internals=True)``).

    Attributes:
        memory: Float[B, N, C] encoder output.
        enc_sampling_locations: Float[B, k, E, M, L, P, 2] on the refined tokens (None without encoder).
        enc_attention_weights: Float[B, k, E, M, L, P] (None without encoder).
        queries: the decoder's input queries, positions, references and (two-stage) source token indices.
        hidden_states: D tensors Float[B, Q, C], the decoder layers' outputs.
        proposals: Float[B, N, 4] grid proposals in logit space (+inf where invalid).
        proposal_valid: Bool[B, N].
    """

    memory: Tensor
    enc_sampling_locations: Tensor | None
    enc_attention_weights: Tensor | None
    queries: DecoderQueries
    hidden_states: list[Tensor]
    proposals: Tensor
    proposal_valid: Tensor


@dataclass
class SparseDETROutput:
    """Everything one forward of the network produces.

    Attributes:
        predictions: last decoder layer ``{"pred_logits", "pred_boxes"}``.
        tokens: the token layout (padding, level shapes and starts).
        decoder_sampling: the decoder's cross-attention sampling (the DAM is built from it).
        selection: the scorer's choice of tokens (with its loss inputs in training); None = dense encoder.
        aux_predictions: decoder layers 0..D-2 (training with aux loss only).
        two_stage_predictions: the two-stage head on all N tokens (training / internals only).
        encoder_aux_predictions: encoder layers 0..E-2 on the refined tokens (training only).
        internals: analysis tensors (``with_internals`` only).
    """

    predictions: dict[str, Tensor]
    tokens: TokenGeometry
    decoder_sampling: DecoderSampling
    selection: TokenSelection | None = None
    aux_predictions: list[dict[str, Tensor]] = field(default_factory=list)
    two_stage_predictions: dict[str, Tensor] | None = None
    encoder_aux_predictions: list[dict[str, Tensor]] = field(default_factory=list)
    internals: NetworkInternals | None = None

    @property
    def num_kept(self) -> Tensor:
        """Long[B] tokens the encoder refines per image (all valid tokens when dense)."""
        return self.selection.num_kept if self.selection is not None else self.tokens.valid_counts
