"""Ablation: tokens selected by an objectness score (a detection head on the backbone tokens trained with the
Hungarian loss) instead of the DAM scorer; ResNet-50, rho = 0.1 (paper Table 3, OS: 44.9 AP)."""
from sparse_detr.modeling.meta_arch.graph import scorer_node

from .common.coco_r50_50ep import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.token_scorer = scorer_node("objectness", keep_ratio=0.1)
train.output_dir = "./output/sparse_detr_r50_objectness_rho0.1_50ep"
