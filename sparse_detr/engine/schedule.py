"""Epoch-based step schedules expressed in iterations (Detectron2 trains by iteration)."""
from __future__ import annotations

import math
from collections.abc import Sequence

from detectron2.config import LazyCall as L
from fvcore.common.param_scheduler import MultiStepParamScheduler

__all__ = ["COCO_TRAIN2017_IMAGES", "epoch_step_schedule", "iterations_per_epoch"]

# Images in COCO train2017 (the official DETR loaders keep the images without annotations).
COCO_TRAIN2017_IMAGES = 118287


def iterations_per_epoch(dataset_size: int, total_batch_size: int) -> int:
    """Iterations of one pass over ``dataset_size`` images with ``total_batch_size`` images per iteration."""
    if dataset_size < 1 or total_batch_size < 1:
        raise ValueError(
            f"dataset_size ({dataset_size}) and total_batch_size ({total_batch_size}) must be >= 1"
        )
    return math.ceil(dataset_size / total_batch_size)


def epoch_step_schedule(
    epochs: float,
    drop_epochs: Sequence[float],
    dataset_size: int,
    total_batch_size: int,
    gamma: float = 0.1,
):
    """A step learning-rate schedule in epochs, converted to iterations.

    Returns:
        (max_iter, lr_multiplier): the number of iterations, and a LazyCall of fvcore's
        ``MultiStepParamScheduler`` multiplying the lr by ``gamma`` at each drop epoch (for
        ``cfg.lr_multiplier``; Detectron2's ``LRScheduler`` hook applies it).
    """
    per_epoch = iterations_per_epoch(dataset_size, total_batch_size)
    max_iter = round(epochs * per_epoch)
    milestones = [round(e * per_epoch) for e in drop_epochs]
    if any(not 0 < m < max_iter for m in milestones) or milestones != sorted(milestones):
        raise ValueError(f"drop_epochs {list(drop_epochs)} must be increasing and inside (0, {epochs})")
    lr_multiplier = L(MultiStepParamScheduler)(
        values=[gamma**i for i in range(len(milestones) + 1)],
        milestones=milestones,
        num_updates=max_iter,
    )
    return max_iter, lr_multiplier
