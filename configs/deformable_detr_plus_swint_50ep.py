"""Deformable DETR+ (the dense baseline: no token scorer, rho = 1), Swin-T, 50 epochs."""
from .common.coco_swint_50ep import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.token_scorer = None
model.heads.encoder_aux = False
train.output_dir = "./output/deformable_detr_plus_swint_50ep"
