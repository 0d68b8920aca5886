"""Base of the paper's Swin-T configs: Sparse DETR (rho = 0.1) with a timm Swin-T backbone, COCO, 50 epochs.

No weights are downloaded: set ``model.backbone.module.pretrained_path`` to a local ImageNet Swin checkpoint
(timm format) to start from pretrained weights as the paper does.
"""
from detectron2.config import LazyCall as L

from sparse_detr.modeling.backbone import SwinBackbone

from .coco_r50_50ep import dataloader, lr_multiplier, model, optimizer, train

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]

# the official code freezes the patch embedding, stage 1 and the merging to stride 8 (freeze_at=2); the
# backbone's execution settings (model.backbone.channels_last, model.backbone.dtype) stay the base's
model.backbone.module = L(SwinBackbone)(
    variant="T", out_features=["res3", "res4", "res5"], freeze_at=2, pretrained_path=None
)
model.neck.in_channels = [192, 384, 768]
train.init_checkpoint = ""
