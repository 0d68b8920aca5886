"""Sparse DETR, ResNet-50, keeping ratio rho = 0.2, 50 epochs (paper Table 3, DAM: 45.6 AP)."""
from .common.coco_r50_50ep import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.token_scorer.keep_ratio = 0.2
train.output_dir = "./output/sparse_detr_r50_rho0.2_50ep"
