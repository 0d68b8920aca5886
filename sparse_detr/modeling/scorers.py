"""Token scorers (which encoder tokens to refine) and the keep-ratio top-k selection.

Scorers live in ``TOKEN_SCORER_REGISTRY`` (short config names in ``SCORER_ALIASES``):
``dam`` (the scoring network of paper appendix A.1, trained
against the decoder attention map), ``objectness`` (a detection head on the backbone tokens, paper 3.3)
and ``random``. Each holds its keep ratio (rho), the same in training and inference; changing rho on a built
model is a property of the scorer, the encoder only receives indices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..utils.keep_ratio import check_keep_ratio
from .heads import MLP
from .registry import TOKEN_SCORER_REGISTRY
from .tokens import TokenBatch

__all__ = [
    "ScorerLossInputs",
    "TokenSelection",
    "kept_token_counts",
    "select_tokens",
    "TokenScorer",
    "DAMScorer",
    "ObjectnessScorer",
    "RandomScorer",
]

@dataclass
class ScorerLossInputs:
    """What a scorer hands the criterion to be trained with (filled in training only).

    Attributes:
        dam_logits: Float[B, N] logits trained against the binarised decoder attention map
            (``loss_mask_prediction``), or None.
        detection_heads: loss-name suffix -> ``{"pred_logits": Float[B, N, K], "pred_boxes": Float[B, N, 4]}``
            of detection heads trained with the Hungarian loss, matched like the two-stage head
            (class-agnostic when the criterion's ``two_stage_class_agnostic`` is set).
    """

    dam_logits: Tensor | None = None
    detection_heads: dict[str, dict[str, Tensor]] = field(default_factory=dict)


@dataclass
class TokenSelection:
    """Tokens chosen for refinement.

    Attributes:
        scores: Float[B, N] scorer logits, padding filled with the batch minimum (as ranked).
        selected_indices: Long[B, k] top-k tokens by descending score, k = max(num_kept).
        num_kept: Long[B] per-image number of kept tokens (the first num_kept[i] of selected_indices[i]).
        loss_inputs: what the scorer's loss needs (empty outside training).
    """

    scores: Tensor
    selected_indices: Tensor
    num_kept: Tensor
    loss_inputs: ScorerLossInputs = field(default_factory=ScorerLossInputs)


def kept_token_counts(padding_mask: Tensor, keep_ratio: float | Tensor) -> Tensor:
    """Per-image number of kept tokens: ``int(float32(valid) * rho) + 1`` capped at the valid count.

    Args:
        padding_mask: Bool[B, N] True on padding.
        keep_ratio: rho, a float or a Float[] tensor (a graph input of an exported model).
    Returns:
        Long[B].
    """
    valid = (~padding_mask).sum(dim=1)
    counts = (valid * keep_ratio).int().long() + 1  # float32 product truncated, as the official code
    return torch.minimum(counts, valid)


def select_tokens(scores: Tensor, padding_mask: Tensor, keep_ratio: float | Tensor) -> TokenSelection:
    """Top-k tokens by score; padding gets the batch-minimum score so it is ranked last.

    Args:
        scores: Float[B, N] raw scorer output; padding_mask: Bool[B, N].
        keep_ratio: rho, a float or a Float[] tensor.
    """
    num_kept = kept_token_counts(padding_mask, keep_ratio)
    # k depends on rho: under torch.export an unbacked size, bounded here so top-k and the encoder trace
    # (num_kept <= valid <= N, and every image has a valid token)
    if torch.jit.is_tracing():  # fvcore's FLOP count: sizes and .item() are traced as tensors there
        k = int(num_kept.max())
    else:
        k = num_kept.max().item()
        torch._check(k >= 1)
        torch._check(k <= scores.shape[1])
    filled = scores.masked_fill(padding_mask, scores.min())
    selected = torch.topk(filled, k, dim=1).indices
    return TokenSelection(scores=filled, selected_indices=selected, num_kept=num_kept)


class TokenScorer(nn.Module):
    """Base class: holds the keep ratio rho and turns scores into a selection of the top-rho tokens.

    Subclasses implement :meth:`score` (scores and their own loss inputs); ``uses_token_features`` says
    whether it needs the projected tokens.
    """

    uses_token_features = True

    def __init__(self, *, keep_ratio: float = 0.1):
        super().__init__()
        self.keep_ratio = keep_ratio

    @property
    def keep_ratio(self) -> float:
        """rho, the share of valid tokens the encoder refines (training and inference alike)."""
        return self._keep_ratio

    @keep_ratio.setter
    def keep_ratio(self, value: float) -> None:
        self._keep_ratio = check_keep_ratio(value)

    def score(
        self, token_features: Tensor | None, proposals: Tensor, padding_mask: Tensor, with_loss_inputs: bool
    ) -> tuple[Tensor, ScorerLossInputs]:
        """Return (Float[B, N] scores, the scorer's loss inputs when ``with_loss_inputs``)."""
        raise NotImplementedError

    def forward(
        self,
        token_features: Tensor | None,
        proposals: Tensor,
        padding_mask: Tensor,
        with_loss_inputs: bool = False,
        keep_ratio: float | Tensor | None = None,
    ) -> TokenSelection:
        """
        Args:
            token_features: Float[B, N, C] projected tokens (None if ``uses_token_features`` is False).
            proposals: Float[B, N, 4] grid proposals in logit space (+inf where invalid).
            padding_mask: Bool[B, N].
            keep_ratio: rho for this call (a float or a Float[] tensor); None = :attr:`keep_ratio`.
        """
        scores, loss_inputs = self.score(token_features, proposals, padding_mask, with_loss_inputs)
        if keep_ratio is None:
            keep_ratio = self.keep_ratio
        selection = select_tokens(scores, padding_mask, keep_ratio)
        selection.loss_inputs = loss_inputs
        return selection

    def select(
        self,
        tokens: TokenBatch,
        proposals: Tensor,
        proposal_valid: Tensor,
        project: Callable[[Tensor, Tensor], Tensor] | None,
        with_loss_inputs: bool,
        keep_ratio: float | Tensor | None = None,
    ) -> TokenSelection | None:
        """The selection of one model call; None for a dense call (rho >= 1 given as a float).

        Args:
            tokens: the neck's tokens; proposals: Float[B, N, 4]; proposal_valid: Bool[B, N].
            project: the model's token projection, (Float[B, N, C], Bool[B, N]) -> Float[B, N, C], applied to
                features + positions when :attr:`uses_token_features` (the view of the two-stage head).
            keep_ratio: rho for this call: a float, or a Float[] tensor (an exported graph's input: the sparse
                path for every value, 1 included); None = :attr:`keep_ratio`.
        """
        if not isinstance(keep_ratio, Tensor):
            if keep_ratio is None:
                keep_ratio = self.keep_ratio
            else:
                keep_ratio = check_keep_ratio(keep_ratio, "SparseDETR.predict(keep_ratio=...)")
            if keep_ratio >= 1.0:
                return None
        token_features = None
        if self.uses_token_features:
            token_features = project(tokens.features + tokens.pos, proposal_valid)
        return self(token_features, proposals, tokens.padding_mask, with_loss_inputs, keep_ratio=keep_ratio)

    def extra_repr(self) -> str:
        return f"keep_ratio={self.keep_ratio}"


@TOKEN_SCORER_REGISTRY.register()
class DAMScorer(TokenScorer):
    """Scoring network of paper appendix A.1 (official ``MaskPredictor``), trained against the binarised DAM.

    ``stem``: LayerNorm -> Linear(C, H) -> GELU; the second half of the features is averaged over all N
    tokens (padding included, as official) and concatenated to the first; ``head``: H -> H/2 -> H/4 -> 1
    with GELU between.
    """

    def __init__(
        self,
        *,
        dim: int = 256,
        hidden_dim: int | None = None,
        keep_ratio: float = 0.1,
    ):
        super().__init__(keep_ratio=keep_ratio)
        hidden_dim = hidden_dim or dim
        self.hidden_dim = hidden_dim
        self.stem = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden_dim), nn.GELU())
        self.head = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim // 2),
            nn.GELU(),
            nn.Linear(hidden_dim // 2, hidden_dim // 4),
            nn.GELU(),
            nn.Linear(hidden_dim // 4, 1),
        )

    def score(self, token_features, proposals, padding_mask, with_loss_inputs):
        z_local, z_global = torch.split(self.stem(token_features), self.hidden_dim // 2, dim=-1)
        # head[0] of cat([z_local, mean(z_global)]): the averaged half is the same for every token of an
        # image, so its share is a per-image bias (no (B, N, H) concatenation, half the multiply-adds)
        first = self.head[0]
        local_weight, global_weight = first.weight.split(self.hidden_dim // 2, dim=1)
        image_bias = F.linear(z_global.mean(dim=1, keepdim=True), global_weight, first.bias)
        hidden = F.linear(z_local, local_weight) + image_bias
        return self.head[1:](hidden).squeeze(-1), ScorerLossInputs()

    def forward(
        self, token_features, proposals, padding_mask, with_loss_inputs=False, keep_ratio=None
    ) -> TokenSelection:
        selection = super().forward(token_features, proposals, padding_mask, with_loss_inputs, keep_ratio)
        if with_loss_inputs:
            # trained on the scores as ranked (padding filled with the batch minimum), as official
            selection.loss_inputs = ScorerLossInputs(dam_logits=selection.scores)
        return selection


@TOKEN_SCORER_REGISTRY.register()
class ObjectnessScorer(TokenScorer):
    """Detection head on the projected backbone tokens; score = best class logit (paper 3.3).

    Trained with the Hungarian loss as the ``_backbone`` detection head (boxes relative to the grid
    proposals).
    """

    def __init__(
        self,
        *,
        dim: int = 256,
        num_classes: int = 80,
        keep_ratio: float = 0.1,
    ):
        super().__init__(keep_ratio=keep_ratio)
        self.class_head = nn.Linear(dim, num_classes)
        nn.init.constant_(self.class_head.bias, -4.59511985013459)  # prior probability 0.01
        self.box_head = MLP(dim, dim, 4, 3)
        nn.init.constant_(self.box_head.layers[-1].weight, 0)
        nn.init.constant_(self.box_head.layers[-1].bias, 0)

    def score(self, token_features, proposals, padding_mask, with_loss_inputs):
        logits = self.class_head(token_features)
        loss_inputs = ScorerLossInputs()
        if with_loss_inputs:
            boxes = (self.box_head(token_features) + proposals).sigmoid()
            loss_inputs.detection_heads["_backbone"] = {"pred_logits": logits, "pred_boxes": boxes}
        return logits.max(-1).values, loss_inputs


@TOKEN_SCORER_REGISTRY.register()
class RandomScorer(TokenScorer):
    """Uniformly random scores (the paper's random-selection baseline); no parameters, no loss."""

    uses_token_features = False

    def score(self, token_features, proposals, padding_mask, with_loss_inputs):
        return torch.rand(padding_mask.shape, device=padding_mask.device), ScorerLossInputs()


# short config names of the built-in scorers -> registry (class) names
SCORER_ALIASES = {"dam": "DAMScorer", "objectness": "ObjectnessScorer", "random": "RandomScorer"}
