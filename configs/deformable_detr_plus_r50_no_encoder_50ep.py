"""The "no encoder" lower bound (rho = 0, paper Table 3: 42.2 AP): backbone tokens go to the decoder
unrefined."""
from .common.coco_r50_50ep import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.token_scorer = None
model.encoder.num_layers = 0
model.heads.encoder_aux = False
train.output_dir = "./output/deformable_detr_plus_r50_no_encoder_50ep"
