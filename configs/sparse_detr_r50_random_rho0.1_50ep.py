"""Ablation: a random subset of tokens is refined (paper Table 3, random: 43.6 AP); ResNet-50, rho = 0.1."""
from sparse_detr.modeling.meta_arch.graph import scorer_node

from .common.coco_r50_50ep import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.token_scorer = scorer_node("random", keep_ratio=0.1)
train.output_dir = "./output/sparse_detr_r50_random_rho0.1_50ep"
