"""Fine-tuning on one's own COCO-format data: the schedule in epochs of that data, and its size and classes.

A config for one's own data starts from a model-zoo config (usually with the official COCO weights) and sets
the data, the number of classes and an epoch schedule computed from the dataset size and batch::

    from sparse_detr import model_zoo
    from sparse_detr.engine.finetune import coco_json_summary, finetune_schedule

    _base = model_zoo.get_config("sparse_detr_r50_rho0.1_50ep")
    _base.train.init_checkpoint = "sparse_detr://official/sparse_detr_r50_10"
    model, dataloader, optimizer, train = _base.model, _base.dataloader, _base.optimizer, _base.train
    datasets = dict(coco_json=[dict(name="my_train", json_file="train.json", image_root="images/"), ...])
    dataloader.train.dataset.names, dataloader.test.dataset.names = "my_train", "my_val"
    model.heads.num_classes = coco_json_summary("train.json").num_classes
    schedule = finetune_schedule(coco_json_summary("train.json").num_images,
                                 dataloader.train.total_batch_size, epochs=12)
    train.max_iter, lr_multiplier = schedule.max_iter, schedule.lr_multiplier
    train.eval_period, train.checkpointer.period = schedule.eval_period, schedule.checkpoint_period
    train.checkpointer.max_to_keep = schedule.max_to_keep  # the last periodic checkpoint, and model_final

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

from ..data.annotation_checks import duplicate_category_ids
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
    them).

    Raises ``FileNotFoundError`` / ``ValueError`` naming the file and what is wrong with it (empty, not JSON,
    not a COCO detection file, no images or categories, categories without id or name, duplicate ids).
    """
    data = _read_coco_json(json_file)
    categories = sorted(data["categories"], key=lambda c: c["id"])
    return CocoJsonSummary(len(data["images"]), len(categories), tuple(str(c["name"]) for c in categories))


def _read_coco_json(json_file: str) -> dict:
    """The json's content, checked for what :func:`coco_json_summary` reads."""
    if not os.path.isfile(json_file):
        raise FileNotFoundError(f"COCO-format annotation file not found: {json_file}")
    if os.path.getsize(json_file) == 0:
        raise ValueError(f"{json_file}: the annotation file is empty (0 bytes)")
    try:
        with open(json_file, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{json_file}: not a valid JSON file ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(
            f"{json_file}: a COCO-format detection json is an object with 'images', 'annotations' and "
            f"'categories', this one holds a {type(data).__name__}"
        )
    missing = {"images", "categories"} - set(data)
    if missing:
        raise ValueError(f"{json_file}: not a COCO-format detection json (no {sorted(missing)})")
    images, categories = data["images"], data["categories"]
    if not isinstance(images, list) or not isinstance(categories, list):
        raise ValueError(f"{json_file}: 'images' and 'categories' must be lists")
    if not images or not categories:
        raise ValueError(
            f"{json_file}: {len(images)} images and {len(categories)} categories; fine-tuning needs at "
            "least one of each"
        )
    malformed = [c for c in categories if not isinstance(c, dict) or not {"id", "name"} <= set(c)]
    if malformed:
        raise ValueError(f"{json_file}: every category needs an 'id' and a 'name', got {malformed[0]!r}")
    repeated = duplicate_category_ids(categories)
    if repeated:
        listed = ", ".join(f"id {cid}: {names}" for cid, names in sorted(repeated.items()))
        raise ValueError(
            f"{json_file}: category ids listed more than once ({listed}); each category needs an id of its "
            "own (labels, class names and COCOEvaluator map one id to one class)"
        )
    return data


@dataclass(frozen=True)
class FinetuneSchedule:
    """A step schedule in epochs of one's own data, in iterations (see :func:`finetune_schedule`)."""

    iterations_per_epoch: int
    max_iter: int
    lr_multiplier: DictConfig
    eval_period: int
    checkpoint_period: int
    # periodic checkpoints kept (``train.checkpointer.max_to_keep``): the last one, to resume from, besides
    # model_final.pth; each holds the optimizer state (~150 MB for R-50), one per epoch would fill a disk
    max_to_keep: int = 1


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
        ``train.eval_period`` and ``train.checkpointer.period``; ``max_to_keep`` (1) for
        ``train.checkpointer.max_to_keep``.
    """
    _check_schedule_arguments(
        num_images,
        total_batch_size,
        {
            "epochs": epochs,
            "eval_every_epochs": eval_every_epochs,
            "checkpoint_every_epochs": checkpoint_every_epochs,
        },
    )
    per_epoch = iterations_per_epoch(num_images, total_batch_size)
    if drop_epochs is None:
        drop_epochs = [epochs * 0.8]
    _check_schedule_length(epochs, drop_epochs, num_images, total_batch_size, per_epoch)
    max_iter, lr_multiplier = epoch_step_schedule(epochs, drop_epochs, num_images, total_batch_size)
    return FinetuneSchedule(
        iterations_per_epoch=per_epoch,
        max_iter=max_iter,
        lr_multiplier=lr_multiplier,
        eval_period=min(max_iter, max(1, math.ceil(eval_every_epochs * per_epoch))),
        checkpoint_period=min(max_iter, max(1, math.ceil(checkpoint_every_epochs * per_epoch))),
    )


# A run of 1-2 iterations fine-tunes nothing: it comes from epochs given as a fraction of one pass, or a
# batch larger than the dataset, and its lr drop rounds onto the first or the last iteration.
MIN_SCHEDULE_ITERATIONS = 3


def _check_schedule_arguments(num_images: int, total_batch_size: int, epoch_arguments: dict) -> None:
    """Positive whole numbers of images and batch size, finite positive epoch counts, each by name."""
    for name, value in {"num_images": num_images, "total_batch_size": total_batch_size}.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"finetune_schedule: {name} must be a whole number >= 1, got {value!r}")
    for name, value in epoch_arguments.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value <= 0:
            raise ValueError(
                f"finetune_schedule: {name} must be a finite number of epochs > 0, got {value!r}"
            )


def _check_schedule_length(
    epochs: float, drop_epochs: Sequence[float], num_images: int, total_batch_size: int, per_epoch: int
) -> None:
    """Refuse a schedule that rounds to fewer than ``MIN_SCHEDULE_ITERATIONS`` iterations, or whose lr drops
    do not fall on increasing iterations strictly inside the run, with the arithmetic that gave them."""
    per_epoch_text = (
        f"{per_epoch} iteration(s) per epoch = ceil(num_images {num_images} / total_batch_size "
        f"{total_batch_size})"
    )
    max_iter = round(epochs * per_epoch)
    if max_iter < MIN_SCHEDULE_ITERATIONS:
        raise ValueError(
            f"finetune_schedule: epochs={epochs:g} at {per_epoch_text} rounds to {max_iter} iteration(s); a "
            f"fine-tuning schedule needs at least {MIN_SCHEDULE_ITERATIONS} (its lr drop would fall on the "
            "first or the last iteration). epochs counts passes over the data (e.g. 12): give more epochs "
            "or a smaller total_batch_size"
        )
    bad = [e for e in drop_epochs if not isinstance(e, (int, float)) or not math.isfinite(e)]
    if bad:
        raise ValueError(
            f"finetune_schedule: drop_epochs must be finite numbers of epochs, got {list(drop_epochs)}"
        )
    milestones = [round(e * per_epoch) for e in drop_epochs]
    if any(not 0 < m < max_iter for m in milestones) or milestones != sorted(set(milestones)):
        raise ValueError(
            f"finetune_schedule: drop_epochs={list(drop_epochs)} fall on iterations {milestones} (at "
            f"{per_epoch_text}); the lr drops must be increasing iterations strictly between 0 and max_iter "
            f"{max_iter} (epochs={epochs:g}): give drop epochs inside (0, {epochs:g}), at least "
            f"{1 / per_epoch:.3g} epoch apart"
        )
