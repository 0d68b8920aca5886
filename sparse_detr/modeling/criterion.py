"""Sparse DETR training criterion: Hungarian losses of every detection head plus the scorer loss.

Loss names follow the official implementation (kakaobrain/sparse-detr) so logs and tests compare
one to one:

=========================  =====================================================================
``loss_{ce,bbox,giou}``     last decoder layer
``..._{i}``                 decoder auxiliary layer ``i`` (0 .. n_dec - 2)
``..._enc``                 two-stage head over all N tokens (padded ones included, as official)
``..._enc_{i}``             encoder auxiliary head after encoder layer ``i`` (0 .. n_enc - 2)
``..._backbone``            objectness scorer head on the backbone tokens (paper 3.3)
``loss_mask_prediction``    DAM scorer: BCE of the token scores against the binarised DAM
=========================  =====================================================================

The scorer terms come from the scorer's own :class:`~sparse_detr.modeling.scorers.ScorerLossInputs`
(detection heads by loss-name suffix, logits to train against the DAM); the criterion knows no scorer.

Every term is normalised by ``num_boxes = max(number of target boxes in the batch, 1)`` (averaged
over processes when distributed). :meth:`SparseDETRCriterion.forward` returns the terms already
multiplied by their weights, so that their sum is the official weighted total (Detectron2 sums
the returned dict).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from detectron2.utils import comm
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou, sigmoid_focal_loss

from .analysis import output_attention_map, output_correlation
from .dam import dam_target
from .matcher import HungarianMatcher
from .outputs import SparseDETROutput
from .registry import CRITERION_REGISTRY
from .scorers import ScorerLossInputs

__all__ = ["SparseDETRCriterion", "targets_from_instances"]

Matches = list[tuple[Tensor, Tensor]]


def _matched_batch_index(matches: Matches) -> tuple[Tensor, Tensor]:
    """(image index, prediction index) of every matched prediction, both Long[num_matched]."""
    image_index = torch.cat([torch.full_like(pred, i) for i, (pred, _) in enumerate(matches)])
    pred_index = torch.cat([pred for pred, _ in matches])
    return image_index, pred_index


def targets_from_instances(
    batched_inputs: list[dict], image_sizes: list[tuple[int, int]], device: torch.device
) -> list[dict[str, Tensor]]:
    """Detectron2 ``instances`` -> the criterion's targets.

    Args:
        batched_inputs: Detectron2 dicts with ``instances`` (``gt_boxes`` in input pixels, ``gt_classes``).
        image_sizes: (H, W) of each input before padding.
    Returns:
        per image ``{"labels": Long[n], "boxes": Float[n, 4]}``, boxes cxcywh normalised by the image size.
    """
    targets = []
    for x, (height, width) in zip(batched_inputs, image_sizes):
        if "instances" not in x:
            raise ValueError("training needs batched_inputs[i]['instances'] (gt_boxes, gt_classes)")
        instances = x["instances"].to(device)
        scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=device)
        boxes = box_convert(instances.gt_boxes.tensor / scale, "xyxy", "cxcywh")
        targets.append({"labels": instances.gt_classes.long(), "boxes": boxes})
    return targets


@CRITERION_REGISTRY.register()
class SparseDETRCriterion(nn.Module):
    """Hungarian set losses for all heads of Sparse DETR, plus the DAM / objectness scorer loss.

    Args:
        num_classes: K, the number of classification logits.
        matcher: the Hungarian matcher (default: focal/L1/GIoU costs 2/5/2).
        class_weight, bbox_weight, giou_weight: weights of the focal, L1 and GIoU terms of every head.
        mask_prediction_weight: weight of ``loss_mask_prediction`` (the DAM scorer loss).
        focal_alpha, focal_gamma: sigmoid focal loss parameters.
        two_stage_class_agnostic: match and train the two-stage (``_enc``) and objectness (``_backbone``)
            heads against a single foreground label 0 (official behaviour without ``eff_specific_head``).

    ``forward(outputs, targets)`` takes the network's :class:`SparseDETROutput` and one dict per image with
    ``labels`` Long[n] and normalised cxcywh ``boxes`` Float[n, 4] (n may be 0).
    """

    def __init__(
        self,
        *,
        num_classes: int,
        matcher: HungarianMatcher | None = None,
        class_weight: float = 2.0,
        bbox_weight: float = 5.0,
        giou_weight: float = 2.0,
        mask_prediction_weight: float = 1.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        two_stage_class_agnostic: bool = False,
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"SparseDETRCriterion: num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.matcher = matcher if matcher is not None else HungarianMatcher(focal_alpha=focal_alpha)
        self.base_weights = {
            "loss_ce": class_weight,
            "loss_bbox": bbox_weight,
            "loss_giou": giou_weight,
            "loss_mask_prediction": mask_prediction_weight,
        }
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.two_stage_class_agnostic = two_stage_class_agnostic

    # ------------------------------------------------------------------ public API
    def forward(self, outputs: SparseDETROutput, targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Weighted losses (official names); their sum is the official weighted total."""
        return {name: value * self.loss_weight(name) for name, value in self.losses(outputs, targets).items()}

    def losses(
        self, outputs: SparseDETROutput, targets: list[dict[str, Tensor]], with_stats: bool = False
    ) -> dict[str, Tensor]:
        """Unweighted loss terms with official names (see the module docstring).

        With ``with_stats`` also the logged-only statistics of the official ``loss_dict``: ``class_error``
        (last layer), ``cardinality_error`` per head and the Corr metric ``corr_mask_attn_map_dec_all`` /
        ``corr_mask_attn_map_dec_{level}`` (sparse models). Statistics are detached.
        """
        pred_logits = outputs.predictions["pred_logits"]
        num_boxes = self.num_boxes(targets, pred_logits.device)
        agnostic = self.two_stage_class_agnostic
        scorer_inputs = outputs.selection.loss_inputs if outputs.selection is not None else ScorerLossInputs()
        heads = [("", outputs.predictions, False)]
        heads += [(f"_{i}", aux, False) for i, aux in enumerate(outputs.aux_predictions)]
        if outputs.two_stage_predictions is not None:
            heads.append(("_enc", outputs.two_stage_predictions, agnostic))
        heads += [(suffix, head, agnostic) for suffix, head in scorer_inputs.detection_heads.items()]
        heads += [(f"_enc_{i}", aux, False) for i, aux in enumerate(outputs.encoder_aux_predictions)]

        terms: dict[str, Tensor] = {}
        for suffix, head, class_agnostic in heads:
            head_targets = self._foreground_targets(targets) if class_agnostic else targets
            head_terms = self.head_losses(head, head_targets, num_boxes, with_stats, is_final=suffix == "")
            terms.update({name + suffix: value for name, value in head_terms.items()})

        needs_dam = scorer_inputs.dam_logits is not None
        needs_corr = with_stats and outputs.selection is not None
        if needs_dam or needs_corr:
            # Only a target and a logged metric are derived from the map (top-k / ratios), so no gradient
            # can flow through it; computing it without autograd matches the official losses exactly.
            with torch.no_grad():
                attention_map = output_attention_map(outputs)
            if needs_dam:
                terms["loss_mask_prediction"] = self.mask_prediction_loss(
                    scorer_inputs.dam_logits, attention_map, outputs
                )
            if needs_corr:
                terms.update(self.correlation_stats(outputs, attention_map))
        return terms

    def loss_weight(self, name: str) -> float:
        """Weight of a loss term given its official name (``loss_ce_enc_0`` -> the ``loss_ce`` weight)."""
        for base, weight in self.base_weights.items():
            if name == base or name.startswith(base + "_"):
                return weight
        raise KeyError(f"SparseDETRCriterion: no weight for loss term {name!r}")

    @staticmethod
    def num_boxes(targets: list[dict[str, Tensor]], device: torch.device) -> float:
        """``max(total target boxes, 1)``, the boxes averaged over processes when distributed."""
        count = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        world_size = comm.get_world_size()
        if world_size > 1 and dist.is_available() and dist.is_initialized():
            dist.all_reduce(count)
        return torch.clamp(count / world_size, min=1).item()

    # ------------------------------------------------------------------ per-head Hungarian loss
    def head_losses(
        self,
        head: dict[str, Tensor],
        targets: list[dict[str, Tensor]],
        num_boxes: float,
        with_stats: bool = False,
        is_final: bool = False,
    ) -> dict[str, Tensor]:
        """Match one head's predictions to the targets and compute ``loss_ce``, ``loss_bbox``, ``loss_giou``.

        Args:
            head: ``pred_logits`` Float[B, Q, K] and ``pred_boxes`` Float[B, Q, 4] (cxcywh).
        """
        pred_logits, pred_boxes = head["pred_logits"], head["pred_boxes"]
        if pred_logits.dim() != 3 or pred_logits.shape[-1] != self.num_classes:
            raise ValueError(
                f"SparseDETRCriterion: pred_logits must be [B, Q, {self.num_classes}] (num_classes), got "
                f"{tuple(pred_logits.shape)}"
            )
        matches = self.matcher(pred_logits, pred_boxes, targets)
        matched = _matched_batch_index([(p.to(pred_logits.device), t) for p, t in matches])
        matched_labels = torch.cat([t["labels"][j] for t, (_, j) in zip(targets, matches)]).to(
            pred_logits.device
        )
        matched_target_boxes = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, matches)]).to(
            pred_boxes
        )

        class_target = torch.zeros_like(pred_logits)
        class_target[matched[0], matched[1], matched_labels] = 1
        loss_ce = (
            sigmoid_focal_loss(pred_logits, class_target, self.focal_alpha, self.focal_gamma, reduction="sum")
            / num_boxes
        )

        matched_boxes = pred_boxes[matched]
        loss_bbox = F.l1_loss(matched_boxes, matched_target_boxes, reduction="sum") / num_boxes
        giou = generalized_box_iou(  # pairwise: [n, 1, 4] x [n, 1, 4] -> [n, 1, 1]
            box_convert(matched_boxes, "cxcywh", "xyxy")[:, None],
            box_convert(matched_target_boxes, "cxcywh", "xyxy")[:, None],
        )
        loss_giou = (1 - giou).sum() / num_boxes

        terms = {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou}
        if with_stats:
            terms.update(self._head_stats(pred_logits, targets, matched, matched_labels, is_final))
        return terms

    @torch.no_grad()
    def _head_stats(self, pred_logits, targets, matched, matched_labels, is_final) -> dict[str, Tensor]:
        # Official logged-only statistics, kept as defined there (``cardinality_error`` counts the
        # predictions whose arg-max is not the last class, a remnant of softmax DETR).
        stats = {}
        if is_final:
            if matched_labels.numel() == 0:
                stats["class_error"] = pred_logits.new_tensor(100.0)
            else:
                correct = pred_logits[matched].argmax(-1) == matched_labels
                stats["class_error"] = 100 - 100 * correct.float().mean()
        num_targets = torch.as_tensor([len(t["labels"]) for t in targets], device=pred_logits.device)
        num_predicted = (pred_logits.argmax(-1) != pred_logits.shape[-1] - 1).sum(1)
        stats["cardinality_error"] = F.l1_loss(num_predicted.float(), num_targets.float())
        return stats

    @staticmethod
    def _foreground_targets(targets: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
        return [{**t, "labels": torch.zeros_like(t["labels"])} for t in targets]

    # ------------------------------------------------------------------ scorer loss and Corr
    @staticmethod
    def mask_prediction_loss(dam_logits: Tensor, attention_map: Tensor, outputs: SparseDETROutput) -> Tensor:
        """``multilabel_soft_margin_loss`` of the scoring-network logits against the binarised DAM.

        Args:
            dam_logits: Float[B, N] scorer logits; attention_map: Float[B, N] the DAM of ``outputs``.
        """
        if dam_logits.shape != attention_map.shape:
            raise ValueError(
                f"SparseDETRCriterion: the scorer's dam_logits must be {tuple(attention_map.shape)} [B, N], "
                f"got {tuple(dam_logits.shape)}"
            )
        target = dam_target(attention_map, outputs.tokens.padding_mask, outputs.num_kept)
        return F.multilabel_soft_margin_loss(dam_logits, target.to(dam_logits.dtype))

    @staticmethod
    @torch.no_grad()
    def correlation_stats(outputs: SparseDETROutput, attention_map: Tensor) -> dict[str, Tensor]:
        """Official Corr statistics, averaged over the batch; selection = all selected columns."""
        corr = output_correlation(outputs, attention_map, all_selected=True).mean(0)
        stats = {"corr_mask_attn_map_dec_all": corr[0]}
        stats.update({f"corr_mask_attn_map_dec_{level}": value for level, value in enumerate(corr[1:])})
        return stats
