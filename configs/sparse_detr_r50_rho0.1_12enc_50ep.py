"""Sparse DETR with a 12-layer encoder (paper section 4.3 / Fig. 6: trainable thanks to the encoder auxiliary
loss); ResNet-50, rho = 0.1."""
from .common.coco_r50_50ep import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.encoder.num_layers = 12
train.output_dir = "./output/sparse_detr_r50_rho0.1_12enc_50ep"
