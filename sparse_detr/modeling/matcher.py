"""Hungarian matching between DETR predictions and ground-truth boxes.

The cost of pairing prediction ``q`` with target ``t`` is

    cost_class * focal_cost(q, label_t) + cost_bbox * L1(box_q, box_t) + cost_giou * -GIoU(box_q, box_t)

with the sigmoid focal classification cost of Deformable DETR. Costs are computed for the whole batch
at once; the optimal one-to-one assignment is then solved per image with scipy's
``linear_sum_assignment``.
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou

__all__ = ["HungarianMatcher"]

# Added inside the logarithms of the focal cost, as in the official implementation, so that
# probabilities of exactly 0 or 1 give a finite cost.
_LOG_EPS = 1e-8
# the matching cost given to NaN/inf entries (predictions of a diverged model)
_NON_FINITE_COST = 1e6


def focal_class_cost(pred_prob: Tensor, target_labels: Tensor, alpha: float, gamma: float) -> Tensor:
    """Focal classification cost of every (prediction, target) pair.

    Args:
        pred_prob: Float[P, K] sigmoid probabilities.
        target_labels: Long[T] target class indices.
    Returns:
        Float[P, T]: focal loss of predicting ``target_labels[t]`` as positive minus as negative.
    """
    prob = pred_prob[:, target_labels]
    negative_cost = (1 - alpha) * prob**gamma * -(1 - prob + _LOG_EPS).log()
    positive_cost = alpha * (1 - prob) ** gamma * -(prob + _LOG_EPS).log()
    return positive_cost - negative_cost


class HungarianMatcher(nn.Module):
    """One-to-one assignment of predictions to targets minimising the weighted matching cost.

    Args:
        cost_class: weight of the focal classification cost.
        cost_bbox: weight of the L1 distance between cxcywh boxes.
        cost_giou: weight of the negative generalized IoU.
        focal_alpha, focal_gamma: parameters of the focal classification cost.
    """

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("HungarianMatcher: cost_class, cost_bbox and cost_giou cannot all be 0")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    def extra_repr(self) -> str:
        return (
            f"cost_class={self.cost_class}, cost_bbox={self.cost_bbox}, cost_giou={self.cost_giou}, "
            f"focal_alpha={self.focal_alpha}, focal_gamma={self.focal_gamma}"
        )

    def cost_matrix(
        self, pred_logits: Tensor, pred_boxes: Tensor, targets: list[dict[str, Tensor]]
    ) -> Tensor:
        """Matching cost of every prediction of the batch against every target of the batch.

        Args:
            pred_logits: Float[B, Q, K] classification logits.
            pred_boxes: Float[B, Q, 4] normalised cxcywh boxes.
            targets: B dicts with ``labels`` Long[n_i] and ``boxes`` Float[n_i, 4] (cxcywh).
        Returns:
            Float[B, Q, sum(n_i)]: column block ``i`` holds the targets of image ``i``.
        """
        batch_size, num_queries = pred_logits.shape[:2]
        pred_prob = pred_logits.flatten(0, 1).sigmoid()
        flat_boxes = pred_boxes.flatten(0, 1)
        target_labels = torch.cat([t["labels"] for t in targets]).to(
            device=pred_logits.device, dtype=torch.int64
        )
        target_boxes = torch.cat([t["boxes"] for t in targets]).to(flat_boxes)

        class_cost = focal_class_cost(pred_prob, target_labels, self.focal_alpha, self.focal_gamma)
        bbox_cost = torch.cdist(flat_boxes, target_boxes, p=1)
        giou_cost = -generalized_box_iou(
            box_convert(flat_boxes, "cxcywh", "xyxy"), box_convert(target_boxes, "cxcywh", "xyxy")
        )
        cost = self.cost_bbox * bbox_cost + self.cost_class * class_cost + self.cost_giou * giou_cost
        return cost.view(batch_size, num_queries, -1)

    @torch.no_grad()
    def forward(
        self, pred_logits: Tensor, pred_boxes: Tensor, targets: list[dict[str, Tensor]]
    ) -> list[tuple[Tensor, Tensor]]:
        """Match the predictions of each image to its targets.

        Args:
            pred_logits: Float[B, Q, K] classification logits.
            pred_boxes: Float[B, Q, 4] normalised cxcywh boxes.
            targets: B dicts with ``labels`` Long[n_i] and ``boxes`` Float[n_i, 4]; ``n_i`` may be 0.
        Returns:
            B pairs ``(prediction_indices, target_indices)`` of Long[min(Q, n_i)] tensors (on the CPU):
            prediction ``prediction_indices[j]`` is matched to target ``target_indices[j]``.
        """
        if pred_logits.dim() != 3 or pred_boxes.shape != (*pred_logits.shape[:2], 4):
            raise ValueError(
                f"HungarianMatcher: expected pred_logits [B, Q, K] and pred_boxes [B, Q, 4], got "
                f"{tuple(pred_logits.shape)} and {tuple(pred_boxes.shape)}"
            )
        cost = self.cost_matrix(pred_logits, pred_boxes, targets).cpu()
        if not torch.isfinite(cost).all():
            # The targets are finite (the dataset node drops other boxes), so the predictions are not: the
            # weights diverged.
            # Match anyway (non-finite costs as the worst), so that the losses come out non-finite and the
            # training's loss guard stops the run naming them, instead of an error here blaming the boxes.
            worst = _NON_FINITE_COST
            cost = torch.nan_to_num(cost, nan=worst, posinf=worst, neginf=worst)
        sizes = [len(t["boxes"]) for t in targets]
        matches = []
        for image_index, image_cost in enumerate(cost.split(sizes, dim=-1)):
            pred_idx, target_idx = linear_sum_assignment(image_cost[image_index].numpy())
            matches.append(
                (torch.as_tensor(pred_idx, dtype=torch.int64), torch.as_tensor(target_idx, dtype=torch.int64))
            )
        return matches
