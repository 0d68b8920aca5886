"""Deformable DETR+ (the dense baseline: the same model without a token scorer, rho = 1), ResNet-50, 50 epochs
(paper Table 3: 46.3 AP). Encoder auxiliary losses need selected tokens, so the dense model has none."""
from .common.coco_r50_50ep import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.token_scorer = None
model.heads.encoder_aux = False
train.output_dir = "./output/deformable_detr_plus_r50_50ep"
