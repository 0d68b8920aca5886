"""Base of the paper's ResNet-50 configs: Sparse DETR (rho = 0.1) on COCO 2017, 50 epochs, batch 16."""
from .data import dataloader
from .models.sparse_detr_r50 import model
from .optim import optimizer
from .schedule import ITERATIONS_PER_EPOCH, MAX_ITER_50EP, lr_multiplier
from .train import train

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]

train.max_iter = MAX_ITER_50EP
train.eval_period = 5 * ITERATIONS_PER_EPOCH
train.checkpointer.period = ITERATIONS_PER_EPOCH
# ImageNet torchvision ResNet-50 (RGB, the official mean/std, stride in the 3x3 conv), as the official code
train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-50.pkl"
