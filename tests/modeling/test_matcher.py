import itertools

import pytest
import torch
from torchvision.ops import box_convert, generalized_box_iou

from sparse_detr.modeling.matcher import HungarianMatcher, focal_class_cost


def random_boxes(generator, n):
    wh = torch.rand(n, 2, generator=generator) * 0.4 + 0.05
    centre = wh / 2 + torch.rand(n, 2, generator=generator) * (1 - wh)
    return torch.cat([centre, wh], dim=1)


def random_problem(seed, num_queries, num_targets, num_classes=5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(len(num_targets), num_queries, num_classes, generator=g) * 2
    boxes = torch.stack([random_boxes(g, num_queries) for _ in num_targets])
    targets = [
        {"labels": torch.randint(0, num_classes, (n,), generator=g), "boxes": random_boxes(g, n)}
        for n in num_targets
    ]
    return logits, boxes, targets


def pair_cost(matcher, logits, boxes, target):
    """Cost of every (query, target) pair for one image, written out directly: Float[Q, n]."""
    prob = logits.sigmoid()[:, target["labels"]]
    a, g = matcher.focal_alpha, matcher.focal_gamma
    focal = a * (1 - prob) ** g * -(prob + 1e-8).log() - (1 - a) * prob**g * -(1 - prob + 1e-8).log()
    l1 = (boxes[:, None, :] - target["boxes"][None, :, :]).abs().sum(-1)
    giou = generalized_box_iou(
        box_convert(boxes, "cxcywh", "xyxy"), box_convert(target["boxes"], "cxcywh", "xyxy")
    )
    return matcher.cost_class * focal + matcher.cost_bbox * l1 - matcher.cost_giou * giou


def brute_force_min_cost(cost):
    """Minimum total cost of a one-to-one assignment of min(Q, n) pairs, by enumeration."""
    num_queries, num_targets = cost.shape
    if num_targets <= num_queries:
        candidates = (
            sum(cost[q, t] for t, q in enumerate(queries))
            for queries in itertools.permutations(range(num_queries), num_targets)
        )
    else:
        candidates = (
            sum(cost[q, t] for q, t in enumerate(chosen))
            for chosen in itertools.permutations(range(num_targets), num_queries)
        )
    return min(float(c) for c in candidates)


@pytest.mark.parametrize(
    "seed, num_queries, num_targets",
    [(0, 4, [3, 2]), (1, 5, [5, 1]), (2, 3, [4, 0]), (3, 6, [2, 6]), (4, 2, [3, 3])],
)
def test_matches_brute_force_assignment(seed, num_queries, num_targets):
    matcher = HungarianMatcher(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0)
    logits, boxes, targets = random_problem(seed, num_queries, num_targets)
    matches = matcher(logits, boxes, targets)
    assert len(matches) == len(targets)
    for i, ((pred_idx, tgt_idx), target) in enumerate(zip(matches, targets)):
        expected_pairs = min(num_queries, len(target["labels"]))
        assert len(pred_idx) == len(tgt_idx) == expected_pairs
        assert pred_idx.dtype == tgt_idx.dtype == torch.int64
        assert len(set(pred_idx.tolist())) == expected_pairs and len(set(tgt_idx.tolist())) == expected_pairs
        if expected_pairs == 0:
            continue
        cost = pair_cost(matcher, logits[i], boxes[i], target)
        assert float(cost[pred_idx, tgt_idx].sum()) == pytest.approx(brute_force_min_cost(cost), rel=1e-5)


def test_batched_cost_equals_per_image_cost():
    matcher = HungarianMatcher(cost_class=1.5, cost_bbox=3.0, cost_giou=0.5)
    logits, boxes, targets = random_problem(7, 6, [2, 3, 1])
    cost = matcher.cost_matrix(logits, boxes, targets)
    start = 0
    for i, target in enumerate(targets):
        n = len(target["labels"])
        torch.testing.assert_close(
            cost[i, :, start : start + n], pair_cost(matcher, logits[i], boxes[i], target)
        )
        start += n


def test_focal_cost_prefers_the_confident_class():
    prob = torch.tensor([[0.9, 0.1], [0.1, 0.9]])
    cost = focal_class_cost(prob, torch.tensor([0, 1]), alpha=0.25, gamma=2.0)
    assert cost[0, 0] < cost[1, 0] and cost[1, 1] < cost[0, 1]


def test_images_without_targets():
    matcher = HungarianMatcher()
    logits, boxes, _ = random_problem(0, 4, [0, 0])
    empty = {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}
    matches = matcher(logits, boxes, [empty, empty])
    assert [(len(p), len(t)) for p, t in matches] == [(0, 0), (0, 0)]


def test_non_finite_predictions_are_matched_so_that_the_losses_show_them():
    """A diverged model's NaN predictions must reach the losses (and the loss guard), not blame targets."""
    logits, boxes, targets = random_problem(0, 4, [2])
    boxes[0, 1, 0] = float("nan")
    logits[0, 2] = float("inf")
    matches = HungarianMatcher()(logits, boxes, targets)
    assert len(matches[0][0]) == 2


def test_bad_input_names_the_culprit():
    matcher = HungarianMatcher()
    logits, boxes, targets = random_problem(0, 4, [2])
    with pytest.raises(ValueError, match="pred_boxes"):
        matcher(logits, boxes[..., :2], targets)
    with pytest.raises(ValueError, match="cannot all be 0"):
        HungarianMatcher(cost_class=0, cost_bbox=0, cost_giou=0)


@pytest.mark.parametrize(
    "head, key",
    [
        ("final", None),
        ("aux_0", ("aux_outputs", 0)),
        ("enc", "enc_outputs"),
        ("enc_aux_0", ("aux_outputs_enc", 0)),
    ],
)
def test_matches_of_the_official_model(official, head, key):
    """Hungarian matches of every head of the official model equal the recorded ones exactly."""
    outputs = official["outputs"]
    if key is None:
        predictions = outputs
    elif isinstance(key, tuple):
        predictions = outputs[key[0]][key[1]]
    else:
        predictions = outputs[key]
    train = official["train"]
    matches = HungarianMatcher(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0)(
        predictions["pred_logits"], predictions["pred_boxes"], train["targets"]
    )
    expected = train["match_indices"][head]
    assert [(p.tolist(), t.tolist()) for p, t in matches] == [(p.tolist(), t.tolist()) for p, t in expected]
