"""Decoder query initialisation: two-stage (top-Q encoder tokens) and learned queries."""

from __future__ import annotations

import torch

from sparse_detr.modeling.heads import PredictionHeads
from sparse_detr.modeling.query_selection import (
    LearnedQueryInit,
    TokenProjection,
    TwoStageQueryInit,
    two_stage_queries,
)


def test_selection_ranks_by_best_class_or_by_logit_zero():
    logits = torch.tensor([[[0.0, 5.0], [1.0, 0.0], [2.0, -1.0]]])
    assert TwoStageQueryInit(dim=32, num_queries=2, class_specific=True).select(logits).tolist() == [[0, 2]]
    assert TwoStageQueryInit(dim=32, num_queries=2, class_specific=False).select(logits).tolist() == [[2, 1]]
    assert TwoStageQueryInit(dim=32, num_queries=10).select(logits).shape == (1, 3)  # Q capped at N


def test_queries_from_memory_or_from_the_box_embedding():
    torch.manual_seed(0)
    memory = torch.randn(2, 6, 32)
    indices = torch.tensor([[5, 1], [0, 3]])
    boxes = torch.randn(2, 2, 4, requires_grad=True)
    from_memory = TwoStageQueryInit(dim=32, num_queries=2, from_memory=True)(memory, indices, boxes)
    assert torch.equal(from_memory.queries[0, 0], memory[0, 5]) and torch.equal(
        from_memory.queries[1, 1], memory[1, 3]
    )
    assert from_memory.query_pos.shape == (2, 2, 32)
    torch.testing.assert_close(from_memory.reference, boxes.detach().sigmoid())
    assert not from_memory.reference.requires_grad  # boxes are detached before the decoder
    embedded = TwoStageQueryInit(dim=32, num_queries=2, from_memory=False)(memory, indices, boxes)
    assert embedded.queries.shape == embedded.query_pos.shape == (2, 2, 32)
    assert not torch.equal(embedded.queries[0, 0], memory[0, 5])


def test_learned_queries_are_shared_across_the_batch():
    init = LearnedQueryInit(dim=16, num_queries=5)
    queries = init(3)
    assert queries.queries.shape == queries.query_pos.shape == (3, 5, 16)
    assert queries.reference.shape == (3, 5, 2) and ((queries.reference > 0) & (queries.reference < 1)).all()
    assert torch.equal(queries.queries[0], queries.queries[2]) and queries.token_indices is None


def test_two_stage_queries_same_boxes_with_and_without_the_loss_predictions():
    torch.manual_seed(0)
    heads = PredictionHeads(hidden_dim=32, num_classes=3, num_decoder_layers=1, two_stage=True)
    with torch.no_grad():
        heads.box_heads[heads.two_stage_site()].layers[-1].weight.normal_()
    init = TwoStageQueryInit(dim=32, num_queries=4)
    memory, proposals = torch.randn(2, 10, 32), torch.randn(2, 10, 4)
    projected = TokenProjection(32)(memory, torch.ones(2, 10, dtype=torch.bool))
    with torch.no_grad():
        train_queries, predictions = two_stage_queries(init, heads, projected, memory, proposals, True)
        eval_queries, none = two_stage_queries(init, heads, projected, memory, proposals, False)
    assert none is None and predictions["pred_logits"].shape == (2, 10, 3)
    assert torch.equal(train_queries.token_indices, eval_queries.token_indices)
    torch.testing.assert_close(train_queries.reference, eval_queries.reference)
    chosen = train_queries.token_indices[0]
    torch.testing.assert_close(train_queries.reference[0], predictions["pred_boxes"][0, chosen])


def test_token_projection_zeroes_invalid_tokens_before_projecting():
    projection = TokenProjection(16)
    tokens = torch.randn(1, 3, 16)
    valid = torch.tensor([[True, False, True]])
    out = projection(tokens, valid)
    torch.testing.assert_close(out[0, 1], projection.norm(projection.linear(torch.zeros(16))))
