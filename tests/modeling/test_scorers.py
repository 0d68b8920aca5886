"""Token scorers and the keep-ratio selection."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from sparse_detr.modeling import TOKEN_SCORER_REGISTRY
from sparse_detr.modeling.meta_arch.graph import scorer_node
from sparse_detr.modeling.scorers import (
    DAMScorer,
    ObjectnessScorer,
    RandomScorer,
    ScorerLossInputs,
    kept_token_counts,
    select_tokens,
)


def test_kept_counts_use_the_float32_product_like_official():
    mask = torch.zeros(1, 100, dtype=torch.bool)
    mask[0, 90:] = True  # 90 valid tokens
    # in float32, 90 * 0.7 rounds to 63.0 -> 63 + 1; float64 gives 62.99999999999999 -> 62 + 1
    assert int(90 * 0.7) + 1 == 63
    assert kept_token_counts(mask, 0.7).tolist() == [64]
    assert kept_token_counts(mask, 0.1).tolist() == [10]


def test_kept_counts_are_per_image_and_capped_at_valid_tokens():
    mask = torch.zeros(3, 50, dtype=torch.bool)
    mask[1, 20:] = True
    mask[2, 45:] = True
    assert kept_token_counts(mask, 0.5).tolist() == [26, 11, 23]
    assert kept_token_counts(mask, 1.0).tolist() == [50, 20, 45]


def test_padding_is_never_selected_even_with_the_highest_scores():
    torch.manual_seed(0)
    mask = torch.zeros(2, 40, dtype=torch.bool)
    mask[1, 10:] = True
    scores = torch.randn(2, 40)
    scores[1, 10:] = 100.0  # padding with huge raw scores
    selection = select_tokens(scores, mask, 0.5)
    assert selection.num_kept.tolist() == [21, 6]
    assert selection.selected_indices.shape == (2, 21)
    kept = selection.selected_indices[1, :6]
    assert (kept < 10).all()
    # the padding score is the batch minimum, so valid tokens rank before padding
    assert torch.equal(kept.sort().values, scores[1, :10].topk(6).indices.sort().values)
    assert (selection.scores[1, 10:] == scores.min()).all()


def test_selection_is_sorted_by_descending_score():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7, 0.3]])
    selection = select_tokens(scores, torch.zeros(1, 5, dtype=torch.bool), 0.5)
    assert selection.selected_indices.tolist() == [[1, 3, 2]]


def test_dam_scorer_matches_the_paper_network_shape():
    scorer = DAMScorer(dim=64, keep_ratio=0.2)
    tokens = torch.randn(2, 30, 64)
    scores, extra = scorer.score(tokens, torch.zeros(2, 30, 4), torch.zeros(2, 30, dtype=torch.bool), True)
    assert scores.shape == (2, 30) and extra == ScorerLossInputs()
    assert [m.out_features for m in scorer.head if isinstance(m, torch.nn.Linear)] == [32, 16, 1]
    # the global half is averaged over all tokens: changing one token changes every score
    tokens2 = tokens.clone()
    tokens2[:, 0] = torch.randn(2, 64) * 5  # (LayerNorm ignores a constant shift)
    scores2, _ = scorer.score(tokens2, None, None, False)
    assert (scores[:, 1:] - scores2[:, 1:]).abs().min() > 0


def test_objectness_scorer_returns_detection_outputs_only_for_the_loss():
    scorer = ObjectnessScorer(dim=32, num_classes=7, keep_ratio=0.3)
    tokens, proposals = torch.randn(2, 20, 32), torch.zeros(2, 20, 4)
    mask = torch.zeros(2, 20, dtype=torch.bool)
    selection = scorer(tokens, proposals, mask, with_loss_inputs=True)
    assert selection.loss_inputs.dam_logits is None
    assert list(selection.loss_inputs.detection_heads) == ["_backbone"]
    outputs = selection.loss_inputs.detection_heads["_backbone"]
    assert outputs["pred_logits"].shape == (2, 20, 7) and outputs["pred_boxes"].shape == (2, 20, 4)
    assert scorer(tokens, proposals, mask).loss_inputs == ScorerLossInputs()


def test_dam_scorer_hands_its_ranked_scores_to_the_dam_loss():
    scorer = DAMScorer(dim=32, keep_ratio=0.3)
    mask = torch.zeros(2, 20, dtype=torch.bool)
    mask[1, 15:] = True
    selection = scorer(torch.randn(2, 20, 32), torch.zeros(2, 20, 4), mask, with_loss_inputs=True)
    assert selection.loss_inputs.dam_logits is selection.scores and not selection.loss_inputs.detection_heads
    assert (selection.scores[1, 15:] == selection.scores.min()).all()  # padding ranked last
    assert scorer(torch.randn(2, 20, 32), torch.zeros(2, 20, 4), mask).loss_inputs.dam_logits is None


def test_random_scorer_needs_no_features():
    scorer = RandomScorer(keep_ratio=0.5)
    assert not scorer.uses_token_features and not list(scorer.parameters())
    selection = scorer(None, torch.zeros(1, 10, 4), torch.zeros(1, 10, dtype=torch.bool))
    assert selection.selected_indices.shape == (1, 6)


def test_scorers_are_registered_and_configured_by_short_name():
    assert {"DAMScorer", "ObjectnessScorer", "RandomScorer"} <= set(dict(TOKEN_SCORER_REGISTRY))
    dam = scorer_node("dam", keep_ratio=0.2)
    assert dam._target_ is DAMScorer and dam.keep_ratio == 0.2
    assert OmegaConf.to_container(dam)["dim"] == "${..neck.hidden_dim}"  # interpolated from the graph
    objectness = OmegaConf.to_container(scorer_node("ObjectnessScorer"))  # a registry name works too
    assert objectness["_target_"] is ObjectnessScorer
    assert objectness["num_classes"] == "${..heads.num_classes}"
    random = scorer_node("random")
    assert random._target_ is RandomScorer and "dim" not in random  # given only what its __init__ takes
    assert scorer_node(None) is None and scorer_node("") is None


def test_one_keep_ratio_in_training_and_eval():
    scorer = RandomScorer(keep_ratio=0.1)
    scorer.eval()
    assert scorer.keep_ratio == 0.1 and not hasattr(scorer, "test_keep_ratio")
    with pytest.raises(ValueError, match="KEEP_RATIO"):
        scorer.keep_ratio = 0.0
    with pytest.raises(ValueError, match="boolean"):
        scorer.keep_ratio = True
