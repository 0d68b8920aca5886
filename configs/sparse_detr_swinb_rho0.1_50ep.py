"""Sparse DETR with a Swin-B backbone, rho = 0.1, 50 epochs (paper appendix A.8, Table 6)."""
from .common.coco_swint_50ep import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.backbone.module.variant = "B"
model.neck.in_channels = [256, 512, 1024]
train.output_dir = "./output/sparse_detr_swinb_rho0.1_50ep"
