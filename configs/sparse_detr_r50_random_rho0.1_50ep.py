"""Ablation: a random subset of tokens is refined (paper Table 3, random: 43.6 AP); ResNet-50, rho = 0.1."""
from detectron2.config import LazyCall as L

from sparse_detr.modeling import RandomScorer

from .common.coco_r50_50ep import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.token_scorer = L(RandomScorer)(keep_ratio=0.1)
train.output_dir = "./output/sparse_detr_r50_random_rho0.1_50ep"
