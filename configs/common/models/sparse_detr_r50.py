"""Base model: Sparse DETR, ResNet-50, rho = 0.1 (paper / official ``r50_sparse_detr_rho_0.1.sh``).

Deformable DETR+ (two-stage, box refinement, Efficient-DETR query init) with 6 + 6 layers, 300 queries
and the DAM scorer. Variants change a few fields, e.g. ``model.token_scorer.keep_ratio = 0.2``,
``model.token_scorer = None`` (dense baseline) or ``model.encoder.num_layers = 12``. Repeated values are
tied by interpolation to ``model.neck`` (dimensions/levels), ``model.encoder`` / ``model.decoder``
(layer counts) and ``model.heads.num_classes``.
"""

from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import BasicStem, ResNet

from sparse_detr.modeling import (
    DAMScorer,
    DeformableDecoder,
    MultiScaleNeck,
    PredictionHeads,
    SparseDeformableEncoder,
    SparseDETR,
    TwoStageQueryInit,
)
from sparse_detr.modeling.backbone import fold_frozen_batchnorm
from sparse_detr.modeling.criterion import SparseDETRCriterion
from sparse_detr.modeling.matcher import HungarianMatcher

model = L(SparseDETR)(
    # FrozenBN folded into the convs: the same function with one pass less over every activation map
    backbone=L(fold_frozen_batchnorm)(
        module=L(ResNet)(
            stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
            # torchvision-style bottlenecks (stride in the 3x3 conv), as the official torchvision ResNet-50
            stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=False, norm="FrozenBN"),
            out_features=["res3", "res4", "res5"],
            freeze_at=2,  # stem + res2 frozen, like the official conv1 + layer1
        )
    ),
    in_features=["res3", "res4", "res5"],
    neck=L(MultiScaleNeck)(in_channels=[512, 1024, 2048], hidden_dim=256, num_levels=4),
    token_scorer=L(DAMScorer)(dim="${..neck.hidden_dim}", keep_ratio=0.1, test_keep_ratio=None),
    encoder=L(SparseDeformableEncoder)(
        num_layers=6,
        dim="${..neck.hidden_dim}",
        ffn_dim=1024,
        num_heads=8,
        num_levels="${..neck.num_levels}",
        num_points=4,
        dropout=0.1,
        pre_norm=False,
    ),
    decoder=L(DeformableDecoder)(
        num_layers=6,
        dim="${..neck.hidden_dim}",
        ffn_dim=1024,
        num_heads=8,
        num_levels="${..neck.num_levels}",
        num_points=4,
        dropout=0.1,
    ),
    query_init=L(TwoStageQueryInit)(
        dim="${..neck.hidden_dim}", num_queries=300, from_memory=True, class_specific=True
    ),
    heads=L(PredictionHeads)(
        hidden_dim="${..neck.hidden_dim}",
        num_classes=80,
        num_decoder_layers="${..decoder.num_layers}",
        two_stage=True,
        num_encoder_layers="${..encoder.num_layers}",
        encoder_aux=True,
        share=False,
    ),
    criterion=L(SparseDETRCriterion)(
        num_classes="${..heads.num_classes}",
        matcher=L(HungarianMatcher)(cost_class=2.0, cost_bbox=5.0, cost_giou=2.0, focal_alpha=0.25),
        class_weight=2.0,
        bbox_weight=5.0,
        giou_weight=2.0,
        mask_prediction_weight=1.0,
        focal_alpha=0.25,
        two_stage_class_agnostic=False,  # must equal (not query_init.class_specific)
    ),
    box_refine=True,
    # official normalisation: RGB, ImageNet mean/std, in 0-255 pixels
    pixel_mean=[123.675, 116.28, 103.53],
    pixel_std=[58.395, 57.12, 57.375],
    input_format="RGB",
    size_divisibility=0,
    max_detections=100,
    aux_loss=True,  # losses on every decoder layer
    channels_last=True,  # backbone + neck on NHWC maps (faster convolutions)
)
