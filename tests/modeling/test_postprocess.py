"""Top-k (query, class) post-processing and its conversion to Detectron2 Instances."""

from __future__ import annotations

import torch

from sparse_detr.modeling.postprocess import detections_to_instances, top_detections


def test_top_detections_rank_all_query_class_pairs():
    logits = torch.full((1, 3, 4), -10.0)
    logits[0, 2, 1] = 3.0  # best: query 2, class 1
    logits[0, 0, 3] = 2.0
    logits[0, 2, 0] = 1.0  # the same query may appear twice with another class
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.1, 0.1, 0.1, 0.1], [0.25, 0.75, 0.5, 0.5]]])
    detections = top_detections(logits, boxes, max_detections=3)
    assert detections.query_indices.tolist() == [[2, 0, 2]]
    assert detections.labels.tolist() == [[1, 3, 0]]
    assert torch.allclose(detections.scores, torch.sigmoid(torch.tensor([[3.0, 2.0, 1.0]])))
    assert torch.allclose(detections.boxes[0, 0], torch.tensor([0.0, 0.5, 0.5, 1.0]))


def test_top_detections_cap_at_the_number_of_pairs_and_scale_to_pixels():
    detections = top_detections(torch.randn(2, 5, 3), torch.rand(2, 5, 4), max_detections=100)
    assert detections.scores.shape == (2, 15)
    instances = detections_to_instances(detections, [(20, 40), (10, 30)])
    assert instances[1].image_size == (10, 30)
    expected = detections.boxes[1] * torch.tensor([30.0, 10.0, 30.0, 10.0])
    assert torch.allclose(instances[1].pred_boxes.tensor, expected)
    assert torch.equal(instances[0].pred_classes, detections.labels[0])
