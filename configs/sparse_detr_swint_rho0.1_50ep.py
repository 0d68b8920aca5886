"""Sparse DETR, Swin-T, keeping ratio rho = 0.1, 50 epochs (paper Table 3, DAM: 48.2 AP)."""
from .common.coco_swint_50ep import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

train.output_dir = "./output/sparse_detr_swint_rho0.1_50ep"
