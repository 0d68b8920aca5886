"""Sparse DETR, ResNet-50, keeping ratio rho = 0.1, 50 epochs (paper Table 3, DAM: 45.3 AP)."""
from .common.coco_r50_50ep import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

train.output_dir = "./output/sparse_detr_r50_rho0.1_50ep"
