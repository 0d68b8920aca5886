"""Sparse DETR, Swin-T, keeping ratio rho = 0.5, 50 epochs (paper Table 3, DAM: 49.3 AP)."""
from .common.coco_swint_50ep import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.token_scorer.keep_ratio = 0.5
train.output_dir = "./output/sparse_detr_swint_rho0.5_50ep"
