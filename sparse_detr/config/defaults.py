"""yacs defaults of Sparse DETR: ``add_sparse_detr_config(cfg)`` adds ``cfg.MODEL.SPARSE_DETR``."""

from __future__ import annotations

import torch
from detectron2.config import CfgNode as CN

from sparse_detr.modeling.backbone.swin import add_swin_config

__all__ = ["add_sparse_detr_config"]


def add_sparse_detr_config(cfg: CN) -> CN:
    """Add the Sparse DETR keys (defaults = paper R-50, rho 0.1) and set the model-level Detectron2 keys.

    Sets ``MODEL.META_ARCHITECTURE = "SparseDETR"``, a torchvision-style frozen ResNet-50 returning res3-res5,
    RGB input with the ImageNet mean/std of the official code, and 100 detections per image; also adds
    ``MODEL.SWIN`` so ``MODEL.BACKBONE.NAME = "SwinBackbone"`` works. ``MODEL.DEVICE`` becomes ``"cpu"``
    when it is Detectron2's default ``"cuda"`` and no CUDA device is available.

    Test score threshold: the model returns the top ``TEST.DETECTIONS_PER_IMAGE`` detections scoring above
    the largest of ``MODEL.SPARSE_DETR.SCORE_THRESH_TEST`` and Detectron2's
    ``MODEL.ROI_HEADS.SCORE_THRESH_TEST`` / ``MODEL.RETINANET.SCORE_THRESH_TEST`` (the keys Detectron2's
    ``demo/demo.py --confidence-threshold`` sets); all three are set to 0 here (no threshold, as the official
    code and the COCO evaluation).
    Returns ``cfg`` for chaining.
    """
    if cfg.MODEL.DEVICE == "cuda" and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.META_ARCHITECTURE = "SparseDETR"
    cfg.MODEL.BACKBONE.NAME = "build_resnet_backbone"
    cfg.MODEL.BACKBONE.FREEZE_AT = 2  # stem + res2, like the official conv1 + layer1
    cfg.MODEL.RESNETS.DEPTH = 50
    cfg.MODEL.RESNETS.NORM = "FrozenBN"
    cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False  # torchvision-style bottleneck
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4", "res5"]
    cfg.MODEL.PIXEL_MEAN = [123.675, 116.28, 103.53]
    cfg.MODEL.PIXEL_STD = [58.395, 57.12, 57.375]
    cfg.INPUT.FORMAT = "RGB"
    cfg.TEST.DETECTIONS_PER_IMAGE = 100
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = 0.0
    add_swin_config(cfg)

    sd = cfg.MODEL.SPARSE_DETR = CN()
    sd.IN_FEATURES = ["res3", "res4", "res5"]
    sd.NUM_CLASSES = 80
    sd.HIDDEN_DIM = 256
    sd.NUM_FEATURE_LEVELS = 4
    sd.NUM_HEADS = 8
    sd.DIM_FEEDFORWARD = 1024
    sd.DROPOUT = 0.1
    sd.ENCODER_NAME = "SparseDeformableEncoder"  # SPARSE_ENCODER_REGISTRY entry
    sd.ENC_LAYERS = 6  # 0 = the "no encoder" ablation
    sd.ENC_POINTS = 4
    sd.PRE_NORM = False  # Post-LN (official) by default
    sd.DEC_LAYERS = 6
    sd.DEC_POINTS = 4
    sd.NUM_QUERIES = 300
    sd.TWO_STAGE = True
    sd.QUERY_INIT_FROM_MEMORY = True  # Efficient DETR query init (official --eff_query_init)
    sd.BOX_REFINE = True
    sd.SHARE_HEADS = False
    sd.ENCODER_AUX_LOSS = True
    sd.AUX_LOSS = True  # losses on every decoder layer
    # token scorer: "dam", "objectness", "random", or "" for the dense encoder
    sd.TOKEN_SCORER = "dam"
    sd.KEEP_RATIO = 0.1  # rho in (0, 1]; 1.0 = dense
    sd.TEST_KEEP_RATIO = None  # rho at inference; None = KEEP_RATIO
    sd.SIZE_DIVISIBILITY = 0  # pad to the largest image only, as the official batching
    sd.SCORE_THRESH_TEST = 0.0  # see the docstring: the Detectron2 threshold keys count too
    # speed: backbone + neck on channels-last maps, FrozenBN folded into the convs (same function,
    # different rounding from the official model; set both False to match official outputs bit-closely)
    sd.CHANNELS_LAST = True
    sd.FOLD_FROZEN_BN = True
    # "float32", or "bfloat16"/"float16": the backbone under torch.autocast (the neck on stays float32)
    sd.BACKBONE_DTYPE = "float32"
    # criterion (SparseDETRCriterion.from_config)
    sd.CRITERION_NAME = "SparseDETRCriterion"
    sd.MATCHER_COST_CLASS = 2.0
    sd.MATCHER_COST_BBOX = 5.0
    sd.MATCHER_COST_GIOU = 2.0
    sd.FOCAL_ALPHA = 0.25
    sd.CLASS_LOSS_WEIGHT = 2.0
    sd.BBOX_LOSS_WEIGHT = 5.0
    sd.GIOU_LOSS_WEIGHT = 2.0
    sd.MASK_PREDICTION_LOSS_WEIGHT = 1.0
    # two-stage proposals ranked by logit 0 (class-agnostic) instead of the best class (official
    # --eff_specific_head is the opposite)
    sd.TWO_STAGE_CLASS_AGNOSTIC = False
    return cfg
