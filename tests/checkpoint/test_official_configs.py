"""Converter coverage of official argument sets beyond the shipped fixture (no official code needed).

Each expectation below was checked numerically against the official implementations
(kakaobrain/sparse-detr and fundamentalvision/Deformable-DETR) on random weights: same outputs to 1e-5,
same weighted losses to 1e-6 relative. Here only the architecture chosen from the args is asserted.
"""

from __future__ import annotations

import argparse

import pytest

from sparse_detr.checkpoint.official_config import official_model_config
from tests.helpers.official_args import DEFORMABLE_DETR_ARGS

SPARSE_DETR_ARGS = dict(
    DEFORMABLE_DETR_ARGS,
    eff_query_init=False,
    eff_specific_head=False,
    use_enc_aux_loss=False,
    rho=0.0,
    backbone_from_scratch=False,
    finetune_early_layers=False,
    mask_prediction_coef=1.0,
)


def _config(base: dict, **change):
    return official_model_config(argparse.Namespace(**{**base, **change}))


@pytest.mark.parametrize(
    "with_box_refine,two_stage",
    [(False, False), (True, False), (True, True)],
)
def test_deformable_detr_refines_boxes_exactly_when_with_box_refine(with_box_refine, two_stage):
    # fundamentalvision/Deformable-DETR hooks the box heads into the decoder iff --with_box_refine
    cfg = _config(DEFORMABLE_DETR_ARGS, with_box_refine=with_box_refine, two_stage=two_stage)
    assert cfg.heads.box_refine == with_box_refine
    assert cfg.heads.share == (not with_box_refine)


@pytest.mark.parametrize(
    "with_box_refine,two_stage,refines",
    [(False, False, False), (True, False, False), (False, True, True), (True, True, True)],
)
def test_sparse_detr_refines_boxes_exactly_when_two_stage(with_box_refine, two_stage, refines):
    # kakaobrain/sparse-detr hooks the box heads into the decoder iff --two_stage (shared without refine)
    cfg = _config(SPARSE_DETR_ARGS, with_box_refine=with_box_refine, two_stage=two_stage)
    assert cfg.heads.box_refine == refines
    assert cfg.heads.share == (not with_box_refine)


def test_matcher_class_cost_alpha_is_fixed_at_the_official_value():
    # official HungarianMatcher hard-codes alpha = 0.25; args.focal_alpha only weights the loss
    cfg = _config(SPARSE_DETR_ARGS, focal_alpha=0.5)
    assert cfg.criterion.matcher.focal_alpha == 0.25
    assert cfg.criterion.focal_alpha == 0.5


def test_loss_and_cost_coefficients_follow_the_args():
    cfg = _config(
        SPARSE_DETR_ARGS,
        set_cost_class=1.5,
        set_cost_bbox=3.0,
        set_cost_giou=4.0,
        cls_loss_coef=1.0,
        bbox_loss_coef=3.0,
        giou_loss_coef=4.0,
        mask_prediction_coef=0.5,
    )
    matcher, criterion = cfg.criterion.matcher, cfg.criterion
    assert (matcher.cost_class, matcher.cost_bbox, matcher.cost_giou) == (1.5, 3.0, 4.0)
    assert (criterion.class_weight, criterion.bbox_weight, criterion.giou_weight) == (1.0, 3.0, 4.0)
    assert criterion.mask_prediction_weight == 0.5


@pytest.mark.parametrize(
    "change,check",
    [
        (dict(num_feature_levels=1), lambda c: c.neck.num_levels == 1 and c.in_features == ["res5"]),
        (dict(num_feature_levels=3), lambda c: c.neck.num_levels == 3),
        (dict(num_feature_levels=5), lambda c: c.neck.num_levels == 5),
        (dict(dataset_file="voc"), lambda c: c.heads.num_classes == 20),
        (dict(aux_loss=False), lambda c: not c.heads.aux_loss),
        (dict(backbone="resnet101"), lambda c: c.backbone.module.module.stages.depth == 101),
        (dict(backbone_from_scratch=True), lambda c: c.backbone.module.module.freeze_at == 0),
        (dict(), lambda c: c.backbone.module.module.freeze_at == 2),
        (
            dict(two_stage=True, rho=0.3, use_enc_aux_loss=True, enc_layers=1, dec_layers=1),
            lambda c: c.token_scorer.keep_ratio == 0.3 and c.encoder.num_layers == 1,
        ),
    ],
)
def test_accepted_official_variants(change, check):
    assert check(_config(SPARSE_DETR_ARGS, **change))
