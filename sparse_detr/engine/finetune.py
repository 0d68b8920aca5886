"""Fine-tuning on one's own COCO-format data: the schedule in epochs of that data, and its size and classes.

A config for one's own data starts from a model-zoo config (usually with the official COCO weights) and sets
the data, the number of classes and an epoch schedule computed from the dataset size and batch::

    from sparse_detr import model_zoo
    from sparse_detr.engine.finetune import coco_json_summary, finetune_schedule

    _base = model_zoo.get_config("sparse_detr_r50_rho0.1_50ep", trained=True)
    model, dataloader, optimizer, train = _base.model, _base.dataloader, _base.optimizer, _base.train
    datasets = dict(coco_json=[dict(name="my_train", json_file="train.json", image_root="images/"), ...])
    dataloader.train.dataset.names, dataloader.test.dataset.names = "my_train", "my_val"
    model.heads.num_classes = coco_json_summary("train.json").num_classes
    schedule = finetune_schedule(coco_json_summary("train.json").num_images,
                                 dataloader.train.total_batch_size, epochs=12)
    train.max_iter, lr_multiplier = schedule.max_iter, schedule.lr_multiplier
    train.eval_period, train.checkpointer.period = schedule.eval_period, schedule.checkpoint_period

Starting from a checkpoint with another number of classes, the class heads keep their initialisation; the
checkpointer (:class:`~sparse_detr.engine.AtomicDetectionCheckpointer`) logs each of those keys once.
``configs/README.md`` has the complete recipe.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from omegaconf import DictConfig

from .schedule import epoch_step_schedule, iterations_per_epoch

__all__ = ["CocoJsonSummary", "FinetuneSchedule", "coco_json_summary", "finetune_schedule"]


@dataclass(frozen=True)
class CocoJsonSummary:
    """What a fine-tuning config needs to know about a COCO-format annotation file."""

    num_images: int
    num_classes: int
    class_names: tuple[str, ...]


def coco_json_summary(json_file: str) -> CocoJsonSummary:
    """Number of images and of categories of a COCO-format json (Detectron2 maps its category ids, sorted, to
    contiguous labels ``0..num_classes-1``; images without annotations count, as the training loader keeps
    them)."""
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"COCO-format annotation file not found: {json_file}")
    with open(json_file) as f:
        data = json.load(f)
    missing = {"images", "categories"} - set(data)
    if missing:
        raise ValueError(f"{json_file}: not a COCO-format detection json (no {sorted(missing)})")
    categories = sorted(data["categories"], key=lambda c: c["id"])
    if not data["images"] or not categories:
        raise ValueError(f"{json_file}: {len(data['images'])} images, {len(categories)} categories")
    return CocoJsonSummary(len(data["images"]), len(categories), tuple(c["name"] for c in categories))


@dataclass(frozen=True)
class FinetuneSchedule:
    """A step schedule in epochs of one's own data, in iterations (see :func:`finetune_schedule`)."""

    iterations_per_epoch: int
    max_iter: int
    lr_multiplier: DictConfig
    eval_period: int
    checkpoint_period: int


def finetune_schedule(
    num_images: int,
    total_batch_size: int,
    epochs: float,
    drop_epochs: Sequence[float] | None = None,
    eval_every_epochs: float = 1.0,
    checkpoint_every_epochs: float = 1.0,
) -> FinetuneSchedule:
    """The fine-tuning schedule of a dataset of ``num_images`` images at ``total_batch_size`` per iteration.

    Args:
        epochs: length of the run in epochs (passes over the training images).
        drop_epochs: epochs after which the lr is divided by 10; default: one drop at 80 % of the run, as the
            paper's 50-epoch schedule (drop after epoch 40).
        eval_every_epochs / checkpoint_every_epochs: evaluation and checkpoint periods, in epochs (the end
            of the run is always evaluated and saved).
    Returns:
        ``max_iter``, ``lr_multiplier`` (LazyCall of fvcore's ``MultiStepParamScheduler``), ``eval_period``
        and ``checkpoint_period`` in iterations, for ``train.max_iter``, ``lr_multiplier``,
        ``train.eval_period`` and ``train.checkpointer.period``.
    """
    per_epoch = iterations_per_epoch(num_images, total_batch_size)
    if drop_epochs is None:
        drop_epochs = [epochs * 0.8]
    max_iter, lr_multiplier = epoch_step_schedule(epochs, drop_epochs, num_images, total_batch_size)
    periods = {"eval_every_epochs": eval_every_epochs, "checkpoint_every_epochs": checkpoint_every_epochs}
    for name, value in periods.items():
        if value <= 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    return FinetuneSchedule(
        iterations_per_epoch=per_epoch,
        max_iter=max_iter,
        lr_multiplier=lr_multiplier,
        eval_period=min(max_iter, max(1, math.ceil(eval_every_epochs * per_epoch))),
        checkpoint_period=min(max_iter, max(1, math.ceil(checkpoint_every_epochs * per_epoch))),
    )
