"""AdamW as the paper / official code: lr 2e-4, weight decay 1e-4 (all parameters), backbone and the
deformable attention's sampling-offset / reference-point projections at 0.1 x lr.

Gradient clipping (max-norm 0.1) is ``train.clip_grad`` (a trainer hook, see ``configs/common/train.py``).
"""
import torch
from detectron2.config import LazyCall as L

from sparse_detr.engine import detr_param_groups

optimizer = L(torch.optim.AdamW)(
    # params.model is set to the model by train_net.py before the optimizer is built
    params=L(detr_param_groups)(
        base_lr="${..lr}",
        backbone_lr_factor=0.1,
        linear_proj_lr_factor=0.1,
        backbone_keywords=["backbone."],
        linear_proj_keywords=["reference_points", "sampling_offsets"],
    ),
    lr=2e-4,
    betas=(0.9, 0.999),
    weight_decay=1e-4,
)
