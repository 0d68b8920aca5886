"""Class and box heads of the decoder layers, the two-stage encoder output and the encoder aux layers."""

from __future__ import annotations

import copy
import math

import torch.nn.functional as F
from torch import Tensor, nn

from .tokens import inverse_sigmoid

__all__ = ["MLP", "PredictionHeads"]


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (the DETR box head)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, dims[1:] + [output_dim]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class PredictionHeads(nn.Module):
    """All class/box heads, one pair per prediction site, in the official order.

    Sites: decoder layers ``0..D-1``, then the two-stage encoder-output head (if any), then the encoder
    auxiliary layers ``0..A-1``. With ``share=True`` every site uses one pair (Deformable DETR without box
    refinement); otherwise each site has its own copy with the same initialisation.

    Box heads predict offsets in logit space: ``box = sigmoid(head(x) + inverse_sigmoid(reference))``.
    """

    def __init__(
        self,
        *,
        hidden_dim: int,
        num_classes: int,
        num_decoder_layers: int,
        two_stage: bool = True,
        num_encoder_layers: int = 0,
        encoder_aux: bool = False,
        share: bool = False,
        box_refine: bool = True,
        aux_loss: bool = True,
    ):
        """
        Args:
            hidden_dim: input dimension C; num_classes: K logits.
            num_decoder_layers: D, one head pair per decoder layer.
            two_stage: add the two-stage head on the encoder output.
            num_encoder_layers, encoder_aux: with ``encoder_aux`` add a head pair per encoder layer but the
                last (its output feeds the two-stage head instead).
            share: one head pair for every site.
            box_refine: the decoder refines its boxes with the decoder sites' box heads
                (:meth:`decoder_box_heads`).
            aux_loss: predictions (hence losses) of every decoder layer in training
                (:meth:`decoder_predictions`).
        """
        super().__init__()
        num_encoder_aux = max(num_encoder_layers - 1, 0) if encoder_aux else 0
        if share and num_encoder_aux:
            raise ValueError(
                "PredictionHeads: share=True is incompatible with encoder aux heads (encoder_aux=True)"
            )
        class_head = nn.Linear(hidden_dim, num_classes)
        bias_value = -math.log((1 - 0.01) / 0.01)  # prior probability 0.01 (focal loss init)
        nn.init.constant_(class_head.bias, bias_value)
        box_head = MLP(hidden_dim, hidden_dim, 4, 3)
        nn.init.constant_(box_head.layers[-1].weight, 0)
        nn.init.constant_(box_head.layers[-1].bias, 0)
        self.num_decoder_layers = num_decoder_layers
        self.two_stage = two_stage
        self.num_encoder_aux = num_encoder_aux
        self.share = share
        self.box_refine = box_refine
        self.aux_loss = aux_loss
        num_sites = 1 if share else num_decoder_layers + int(two_stage) + num_encoder_aux
        self.class_heads = nn.ModuleList(copy.deepcopy(class_head) for _ in range(num_sites))
        self.box_heads = nn.ModuleList(copy.deepcopy(box_head) for _ in range(num_sites))
        if not two_stage:
            nn.init.constant_(self.box_heads[0].layers[-1].bias[2:], -2.0)

    def _site(self, index: int) -> int:
        return 0 if self.share else index

    def decoder_site(self, layer: int) -> int:
        return self._site(layer)

    def two_stage_site(self) -> int:
        if not self.two_stage:
            raise RuntimeError("PredictionHeads built with two_stage=False has no two-stage head")
        return self._site(self.num_decoder_layers)

    def encoder_aux_site(self, layer: int) -> int:
        return self._site(self.num_decoder_layers + int(self.two_stage) + layer)

    def decoder_box_heads(self) -> list[nn.Module] | None:
        """The box heads used for iterative refinement, one per decoder layer; None without ``box_refine``."""
        if not self.box_refine:
            return None
        return [self.box_heads[self.decoder_site(i)] for i in range(self.num_decoder_layers)]

    def predict(self, site: int, features: Tensor, reference_unactivated: Tensor) -> dict[str, Tensor]:
        """Class logits and boxes at one site.

        Args:
            features: Float[B, Q, C]; reference_unactivated: Float[B, Q, 4] or [B, Q, 2] in logit space
                (2-d references only shift the centre).
        Returns:
            {"pred_logits": Float[B, Q, K], "pred_boxes": Float[B, Q, 4] cxcywh in [0, 1]}.
        """
        offsets = self.box_heads[site](features)
        if reference_unactivated.shape[-1] == 4:
            boxes = offsets + reference_unactivated
        else:
            boxes = offsets.clone()
            boxes[..., :2] = boxes[..., :2] + reference_unactivated
        return {"pred_logits": self.class_heads[site](features), "pred_boxes": boxes.sigmoid()}

    def predict_from_reference(self, site: int, features: Tensor, reference: Tensor) -> dict[str, Tensor]:
        """Same as :meth:`predict` with a reference given in [0, 1] (inverse-sigmoid applied here)."""
        return self.predict(site, features, inverse_sigmoid(reference))

    def decoder_predictions(
        self, hidden_states: list[Tensor], references: list[Tensor], with_aux: bool
    ) -> list[dict[str, Tensor]]:
        """Predictions of the last decoder layer, preceded by those of layers 0..D-2 with ``with_aux`` and
        ``aux_loss``.

        Args:
            hidden_states, references: per decoder layer Float[B, Q, C] and its input reference Float[B, Q, 4]
                or [B, Q, 2] in [0, 1] (``DecoderOutput``).
        """
        last = self.num_decoder_layers - 1
        layers = range(last + 1) if with_aux and self.aux_loss else [last]
        return [
            self.predict_from_reference(self.decoder_site(layer), hidden_states[layer], references[layer])
            for layer in layers
        ]

    def encoder_aux_predictions(
        self, layer_queries: list[Tensor], proposals: Tensor
    ) -> list[dict[str, Tensor]]:
        """Predictions on the refined tokens after encoder layers 0..A-1, boxes relative to their proposals.

        Args:
            layer_queries: per encoder layer Float[B, k, C] (``EncoderOutput.layer_queries``).
            proposals: Float[B, k, 4] the refined tokens' grid proposals in logit space.
        """
        return [
            self.predict(self.encoder_aux_site(layer), layer_queries[layer], proposals)
            for layer in range(self.num_encoder_aux)
        ]
