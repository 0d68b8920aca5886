"""Checkpoints written atomically, kept across restarts, and set aside after a divergence.

Saving (:class:`AtomicDetectionCheckpointer`, loading as :class:`~sparse_detr.checkpoint.safe_loading.
SafeDetectionCheckpointer`): fvcore's ``Checkpointer.save`` streams ``torch.save`` into the
final file and rewrites ``last_checkpoint`` in place, so a job killed while saving leaves a truncated
``model_*.pth``. Here both go to a temporary file in the same directory, moved into place with ``os.replace``
(atomic on POSIX). Temporary files of killed processes are removed when the checkpointer is created, a
model with NaN/inf weights is never written (it would become ``last_checkpoint``), and a full disk is reported
as :class:`NoSpaceLeftError` naming the directory (the previous checkpoint stays in place).
:class:`PersistentPeriodicCheckpointer` honours ``max_to_keep`` across restarts.
"""
from __future__ import annotations

import errno
import logging
import os
import re
from typing import Any

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import hooks

from ..checkpoint.safe_loading import (
    NonFiniteWeightsError,
    SafeDetectionCheckpointer,
    _listing,
    non_finite_tensors,
)
from ..utils.files import TEMPORARY_FILE, NoSpaceLeftError, atomic_write
from ..utils.processes import process_alive

__all__ = [
    "AtomicDetectionCheckpointer",
    "NoSpaceLeftError",
    "PersistentPeriodicCheckpointer",
    "atomic_torch_save",
    "set_aside_diverged_checkpoint",
]

logger = logging.getLogger(__name__)

_PERIODIC_CHECKPOINT = re.compile(r"^(?P<prefix>.+)_(?P<iteration>\d{7})\.pth$")


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save(obj, path)`` through a temporary file and ``os.replace``."""
    atomic_write(path, lambda f: torch.save(obj, f))


def remove_stale_temporary_files(directory: str) -> list[str]:
    """Delete ``.<name>.tmp<pid>`` files left in ``directory`` by processes that no longer run."""
    removed = []
    if not directory or not os.path.isdir(directory):
        return removed
    for name in os.listdir(directory):
        match = TEMPORARY_FILE.match(name)
        if match and not process_alive(int(match.group(1))):
            path = os.path.join(directory, name)
            try:
                os.remove(path)
            except FileNotFoundError:
                continue
            removed.append(name)
    if removed:
        logger.info(
            f"Removed {len(removed)} temporary checkpoint file(s) of killed runs in {directory}: {removed}"
        )
    return removed


class AtomicDetectionCheckpointer(SafeDetectionCheckpointer):
    """``SafeDetectionCheckpointer`` with atomic ``save`` and ``tag_last_checkpoint`` (local directories)."""

    def __init__(self, model, save_dir: str = "", **kwargs):
        super().__init__(model, save_dir, **kwargs)
        if self.save_to_disk and save_dir:
            remove_stale_temporary_files(save_dir)

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        model_state = self.model.state_dict()
        bad = non_finite_tensors(model_state)
        if bad:
            raise NonFiniteWeightsError(
                f"Not saving checkpoint {name!r}: {len(bad)} weight tensor(s) hold NaN/inf "
                f"({_listing(bad)}); "
                "training diverged (lower the learning rate). The last checkpoint stays "
                f"{self.get_checkpoint_file() if self.has_checkpoint() else 'absent'!r}."
            )
        data = {"model": model_state}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        previous = self.get_checkpoint_file() if self.has_checkpoint() else None
        try:
            atomic_torch_save(data, save_file)
            self.tag_last_checkpoint(basename)
        except NoSpaceLeftError as error:
            kept = (
                f"the previous checkpoint {previous} is intact and still last_checkpoint"
                if previous
                else "no earlier checkpoint exists"
            )
            raise NoSpaceLeftError(
                errno.ENOSPC,
                f"Checkpoint {name!r} not saved: {error.strerror}; {kept}. Free space in "
                f"{self.save_dir} (or set train.output_dir elsewhere) and resume with --resume",
            ) from error

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        atomic_write(path, last_filename_basename.encode())


class PersistentPeriodicCheckpointer(hooks.PeriodicCheckpointer):
    """Detectron2's ``PeriodicCheckpointer`` hook whose ``max_to_keep`` also counts earlier runs' files.

    The stock hook remembers only the checkpoints it wrote itself, so every restart of a job (``--resume``
    after a kill) leaves up to ``max_to_keep`` more files behind. Here the periodic checkpoints already in the
    output directory (``<prefix>_<7-digit iteration>.pth``) are counted first, oldest first.
    """

    def __init__(
        self, checkpointer, period: int, max_iter=None, max_to_keep=None, file_prefix: str = "model"
    ):
        if int(period) <= 0:
            raise ValueError(
                f"train.checkpointer.period must be a positive number of iterations, got {period}"
            )
        if max_to_keep is not None and int(max_to_keep) <= 0:
            raise ValueError(f"train.checkpointer.max_to_keep must be positive or None, got {max_to_keep}")
        super().__init__(
            checkpointer, period, max_iter=max_iter, max_to_keep=max_to_keep, file_prefix=file_prefix
        )
        save_dir = checkpointer.save_dir
        if save_dir and os.path.isdir(save_dir):
            existing = []
            for name in os.listdir(save_dir):
                match = _PERIODIC_CHECKPOINT.match(name)
                if match and match.group("prefix") == file_prefix:
                    existing.append((int(match.group("iteration")), os.path.join(save_dir, name)))
            self.recent_checkpoints = [path for _, path in sorted(existing)]

    def step(self, iteration: int, **kwargs: Any) -> None:
        if (int(iteration) + 1) % self.period == 0:
            # a file rewritten by this run (a restart from scratch) counts once, as the newest
            target = os.path.join(self.checkpointer.save_dir, f"{self.file_prefix}_{int(iteration):07d}.pth")
            self.recent_checkpoints = [p for p in self.recent_checkpoints if p != target]
        super().step(iteration, **kwargs)


def set_aside_diverged_checkpoint(checkpointer: DetectionCheckpointer, failed_iteration: int) -> str | None:
    """After training stopped on non-finite losses at ``failed_iteration``: keep ``last_checkpoint`` usable.

    The checkpoint written right after iteration ``failed_iteration - 1`` holds the weights that produced the
    non-finite losses (finite, but exploded by the last optimizer step): ``--resume`` from it would fail
    again. It is renamed to ``<name>.diverged`` (kept for inspection, not deleted) and ``last_checkpoint``
    goes back to the newest earlier checkpoint (or is removed when there is none).

    Returns:
        the renamed file's new path, or None when the last checkpoint is older (nothing to do).
    """
    if not checkpointer.save_to_disk or not checkpointer.has_checkpoint():
        return None
    last = checkpointer.get_checkpoint_file()
    match = _PERIODIC_CHECKPOINT.match(os.path.basename(last))
    if match is None or int(match.group("iteration")) != failed_iteration - 1 or not os.path.isfile(last):
        return None
    diverged = last + ".diverged"
    os.replace(last, diverged)
    earlier = sorted(
        (int(m.group("iteration")), name)
        for name in os.listdir(checkpointer.save_dir)
        if (m := _PERIODIC_CHECKPOINT.match(name)) and m.group("prefix") == match.group("prefix")
    )
    tag = os.path.join(checkpointer.save_dir, "last_checkpoint")
    if earlier:
        checkpointer.tag_last_checkpoint(earlier[-1][1])
    elif os.path.exists(tag):
        os.remove(tag)
    logger.warning(
        f"The checkpoint {last} holds the weights that gave non-finite losses at iteration "
        f"{failed_iteration}; "
        f"renamed to {diverged}. last_checkpoint now names "
        f"{earlier[-1][1] if earlier else 'nothing (no earlier checkpoint)'}."
    )
    return diverged
