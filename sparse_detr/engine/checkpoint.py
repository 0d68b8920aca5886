"""A Detectron2 checkpointer whose files are written atomically.

fvcore's ``Checkpointer.save`` streams ``torch.save`` straight into the final file and rewrites
``last_checkpoint`` in place, so a job killed while saving leaves a truncated ``model_*.pth`` that
``--resume`` then tries to load. Here both are written to a temporary file in the same directory and moved
into place with ``os.replace`` (atomic on POSIX), so a reader sees the old file or the complete new one.

Loading a checkpoint whose tensors have other shapes than the model's (fine-tuning a COCO model on a dataset
with another number of classes: the class heads) keeps the model's initialisation for them, as fvcore does;
each such key is logged once, in one message (fvcore names it twice: skipped, then missing).
"""
from __future__ import annotations

import os
from typing import Any

import torch
from detectron2.checkpoint import DetectionCheckpointer
from fvcore.common.checkpoint import _IncompatibleKeys

__all__ = ["AtomicDetectionCheckpointer", "atomic_torch_save"]


def _atomic_write(path: str, write) -> None:
    directory, basename = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{basename}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save(obj, path)`` through a temporary file and ``os.replace``."""
    _atomic_write(path, lambda f: torch.save(obj, f))


class AtomicDetectionCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` with atomic ``save`` and ``tag_last_checkpoint`` (local directories)."""

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_torch_save(data, save_file)
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        path = os.path.join(self.save_dir, "last_checkpoint")
        _atomic_write(path, lambda f: f.write(last_filename_basename.encode()))

    def _log_incompatible_keys(self, incompatible: _IncompatibleKeys) -> None:
        reinitialised = [key for key, _, _ in incompatible.incorrect_shapes]
        if reinitialised:
            shapes = "\n".join(
                f"  {key}: {tuple(in_checkpoint)} in the checkpoint, {tuple(in_model)} in the model"
                for key, in_checkpoint, in_model in incompatible.incorrect_shapes
            )
            self.logger.warning(
                f"{len(reinitialised)} tensor(s) keep their initialisation, their shape differs from the "
                f"checkpoint's (expected when fine-tuning to another number of classes):\n{shapes}"
            )
        super()._log_incompatible_keys(
            _IncompatibleKeys(
                missing_keys=[key for key in incompatible.missing_keys if key not in set(reinitialised)],
                unexpected_keys=incompatible.unexpected_keys,
                incorrect_shapes=[],
            )
        )
