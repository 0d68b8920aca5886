"""Inference post-processing: top-k (query, class) pairs -> Detectron2 ``Instances``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from detectron2.structures import Boxes, Instances
from torch import Tensor, nn
from torchvision.ops import box_convert

__all__ = ["Detections", "TopDetections", "top_detections", "detections_to_instances", "clipped_pixel_boxes"]


@dataclass
class Detections:
    """Top-k detections of a batch.

    Attributes:
        scores: Float[B, k] sigmoid probabilities, descending.
        labels: Long[B, k] class index (logit index).
        boxes: Float[B, k, 4] normalised xyxy (relative to the unpadded image).
        query_indices: Long[B, k] the decoder query of each detection.
    """

    scores: Tensor
    labels: Tensor
    boxes: Tensor
    query_indices: Tensor


def top_detections(pred_logits: Tensor, pred_boxes: Tensor, max_detections: int = 100) -> Detections:
    """Top-k over all Q x K (query, class) pairs of sigmoid scores, no threshold (official PostProcess).

    Args:
        pred_logits: Float[B, Q, K]; pred_boxes: Float[B, Q, 4] cxcywh in [0, 1].
    """
    batch, num_queries, num_classes = pred_logits.shape
    prob = pred_logits.sigmoid().view(batch, -1)
    k = min(max_detections, prob.shape[1])
    scores, flat_indices = torch.topk(prob, k, dim=1)
    query_indices = torch.div(flat_indices, num_classes, rounding_mode="floor")
    labels = flat_indices % num_classes
    boxes = box_convert(pred_boxes, "cxcywh", "xyxy")
    boxes = torch.gather(boxes, 1, query_indices.unsqueeze(-1).expand(-1, -1, 4))
    return Detections(scores=scores, labels=labels, boxes=boxes, query_indices=query_indices)


def detections_to_instances(detections: Detections, image_sizes: list[tuple[int, int]]) -> list[Instances]:
    """One ``Instances`` per image, boxes in pixels of that image's (unpadded) input size (h, w)."""
    results = []
    for i, (height, width) in enumerate(image_sizes):
        scale = detections.boxes.new_tensor([width, height, width, height])
        instances = Instances((height, width))
        instances.pred_boxes = Boxes(detections.boxes[i] * scale)
        instances.scores = detections.scores[i]
        instances.pred_classes = detections.labels[i]
        results.append(instances)
    return results


class TopDetections(nn.Module):
    """The model's inference output: per image its top ``max_detections`` (query, class) pairs, of those the
    ones scoring above ``score_threshold`` (0 = all, as the official code and the COCO evaluation)."""

    def __init__(self, *, max_detections: int, score_threshold: float):
        super().__init__()
        self.max_detections = max_detections
        self.score_threshold = score_threshold

    def forward(
        self, pred_logits: Tensor, pred_boxes: Tensor, image_sizes: list[tuple[int, int]]
    ) -> list[Instances]:
        """
        Args:
            pred_logits: Float[B, Q, K]; pred_boxes: Float[B, Q, 4] cxcywh in [0, 1].
            image_sizes: (h, w) of each unpadded image; the boxes are returned in its pixels.
        """
        detections = top_detections(pred_logits, pred_boxes, self.max_detections)
        instances = detections_to_instances(detections, image_sizes)
        if self.score_threshold > 0:
            instances = [i[i.scores > self.score_threshold] for i in instances]
        return instances

    def extra_repr(self) -> str:
        return f"max_detections={self.max_detections}, score_threshold={self.score_threshold}"


def clipped_pixel_boxes(detections: Detections, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Boxes in pixels of the (unpadded, same-size) images, clipped to them, and which are not empty.

    What Detectron2's ``detector_postprocess`` does at the input size, written as tensor ops for graphs:
    ``height`` and ``width`` may be symbolic.

    Returns:
        boxes Float[B, k, 4] (x1, y1, x2, y2), nonempty Bool[B, k] (positive width and height).
    """
    boxes = detections.boxes
    size = [torch.scalar_tensor(s, dtype=boxes.dtype, device=boxes.device) for s in (width, height)]
    scale = torch.stack(size * 2)
    pixel_boxes = torch.minimum(torch.maximum(boxes * scale, torch.zeros_like(scale)), scale)
    nonempty = (pixel_boxes[..., 2] > pixel_boxes[..., 0]) & (pixel_boxes[..., 3] > pixel_boxes[..., 1])
    return pixel_boxes, nonempty
