"""AdamW as the paper / official code: lr 2e-4, weight decay 1e-4 (all parameters), backbone and the
deformable attention's sampling-offset / reference-point projections at 0.1 x lr, the gradient norm of all
parameters clipped to 0.1 before each step.

The clipping is part of the optimizer (``ClippedAdamW.step``), so Detectron2's own
``tools/lazyconfig_train_net.py`` trains the same model as ``train_net.py``; ``optimizer.clip_max_norm=None``
turns it off.
"""
from detectron2.config import LazyCall as L

from sparse_detr.engine import ClippedAdamW, detr_param_groups

optimizer = L(ClippedAdamW)(
    # params.model is set to the model by the trainer script before the optimizer is built
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
    clip_max_norm=0.1,
    clip_norm_type=2.0,
    log_period="${oc.select:train.log_period,20}",  # grad_norm read (a host sync) when the writers write
)
