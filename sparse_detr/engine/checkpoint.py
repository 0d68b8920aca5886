"""Detectron2 checkpointers that load safely and strictly and write atomically.

Loading (:class:`SafeDetectionCheckpointer`, the one loader of the project's apps, training and
evaluation):

- ``.pkl`` files go through a restricted unpickler (:mod:`sparse_detr.utils.safe_pickle`): numpy
  arrays, containers, strings and numbers only; any other global is refused by name, nothing runs.
  Other files are read with ``torch.load(weights_only=True)``.
- a missing, empty or unreadable file is named, and so is a ``.pth`` whose zip member fails its CRC-32
  (a flipped bit in a tensor's data, which ``torch.load`` would load silently);
- ``strict=True`` (evaluation, predictors, demo, ``--resume``): a checkpoint whose keys or shapes do not fit
  the model stops with the keys named (a few of each kind and their count), or, when its layer stacks have
  other depths (a 2-layer checkpoint for a 6-layer config), with the layer counts, instead of Detectron2's
  warnings followed by results of a partly random model. ``strict=False`` (training from an
  initialisation: backbone-only checkpoints, fine-tuning to other classes) loads what fits and logs the
  skipped keys in one message; tensors whose shape differs (the class heads when fine-tuning to another
  number of classes) keep their initialisation and are each named once. NaN/inf weights are refused either
  way (a model started from them fails at its first iteration).

Saving (:class:`AtomicDetectionCheckpointer`): fvcore's ``Checkpointer.save`` streams ``torch.save`` into the
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
import pickle
import re
from typing import Any
from urllib.parse import urlparse

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.checkpoint.c2_model_loading import align_and_update_state_dicts
from detectron2.engine import hooks
from fvcore.common.checkpoint import _filter_reused_missing_keys, _IncompatibleKeys

from ..utils.files import TEMPORARY_FILE, NoSpaceLeftError, atomic_write
from ..utils.processes import process_alive
from ..utils.safe_pickle import (
    UnsafeCheckpointError,
    check_checkpoint_file,
    load_restricted_pickle,
    unreadable_checkpoint_error,
)
from ..utils.zip_integrity import check_zip_members

__all__ = [
    "AtomicDetectionCheckpointer",
    "CheckpointMismatchError",
    "NoSpaceLeftError",
    "NonFiniteWeightsError",
    "PersistentPeriodicCheckpointer",
    "SafeDetectionCheckpointer",
    "atomic_torch_save",
    "load_weights",
    "set_aside_diverged_checkpoint",
]

logger = logging.getLogger(__name__)

# how many keys of each kind an error or warning lists before "... and N more"
_KEYS_SHOWN = 5
_PERIODIC_CHECKPOINT = re.compile(r"^(?P<prefix>.+)_(?P<iteration>\d{7})\.pth$")


class CheckpointMismatchError(ValueError):
    """A checkpoint's keys or shapes do not fit the model (strict loading).

    Attributes:
        incompatible: the missing, unexpected and mis-shaped keys (fvcore's ``_IncompatibleKeys``).
        architecture: the layer stacks whose depth differs (e.g. ``"encoder.layers: 2 in the checkpoint,
            6 in the model"``); empty when the layer counts agree.
    """

    def __init__(self, message: str, incompatible: _IncompatibleKeys, architecture: tuple[str, ...] = ()):
        super().__init__(message)
        self.incompatible = incompatible
        self.architecture = architecture


class NonFiniteWeightsError(FloatingPointError):
    """NaN/inf weights: a model holding them is not saved, a checkpoint holding them is not loaded."""


_STACK_INDEX = re.compile(r"^(?P<stack>.+?)\.(?P<index>\d+)(\.|$)")


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_KEYS_SHOWN])
    return shown + (f", ... and {len(items) - _KEYS_SHOWN} more" if len(items) > _KEYS_SHOWN else "")


def describe_incompatible(incompatible: _IncompatibleKeys) -> list[str]:
    """One line per kind of incompatibility: count and the first few keys."""
    lines = []
    if incompatible.missing_keys:
        keys = sorted(incompatible.missing_keys)
        lines.append(f"{len(keys)} model key(s) missing from the checkpoint: {_listing(keys)}")
    if incompatible.unexpected_keys:
        keys = sorted(incompatible.unexpected_keys)
        lines.append(f"{len(keys)} checkpoint key(s) the model does not have: {_listing(keys)}")
    if incompatible.incorrect_shapes:
        shapes = [
            f"{k} (checkpoint {tuple(c)}, model {tuple(m)})"
            for k, c, m in sorted(incompatible.incorrect_shapes)
        ]
        lines.append(f"{len(shapes)} key(s) with another shape: {_listing(shapes)}")
    return lines


def stack_depths(state_dict: dict[str, Any]) -> dict[str, int]:
    """Number of entries of each indexed module list of a state_dict.

    The first numbered component of a key names the stack: ``encoder.layers.3.ffn.linear1.weight`` counts
    entry 3 of ``encoder.layers``. Returns ``{stack: number of distinct indices}``.
    """
    indices: dict[str, set[str]] = {}
    for key in state_dict:
        match = _STACK_INDEX.match(str(key))
        if match:
            indices.setdefault(match.group("stack"), set()).add(match.group("index"))
    return {stack: len(found) for stack, found in indices.items()}


def describe_depth_differences(checkpoint_state: dict[str, Any], model_state: dict[str, Any]) -> list[str]:
    """The layer stacks both state_dicts have whose depth differs, one line each (the model's order)."""
    in_checkpoint, in_model = stack_depths(checkpoint_state), stack_depths(model_state)
    return [
        f"{stack}: {in_checkpoint[stack]} in the checkpoint, {depth} in the model"
        for stack, depth in in_model.items()
        if stack in in_checkpoint and in_checkpoint[stack] != depth
    ]


class SafeDetectionCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` that never runs code from a file and, if ``strict``, refuses wrong weights.

    Args:
        model, save_dir, save_to_disk, checkpointables: as ``DetectionCheckpointer``.
        strict: refuse a checkpoint with missing, unexpected or mis-shaped model keys
            (:class:`CheckpointMismatchError`); otherwise load what fits and log the rest once.
    """

    def __init__(
        self, model, save_dir: str = "", *, save_to_disk=None, strict: bool = False, **checkpointables
    ):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.strict = strict
        self._loading = ""

    def load(self, path: str, *args, **kwargs) -> dict[str, Any]:
        if path and "://" not in path:
            check_checkpoint_file(urlparse(path)._replace(query="").geturl())
        self._loading = path
        try:
            return super().load(path, *args, **kwargs)
        finally:
            self._loading = ""

    def get_checkpoint_file(self) -> str:
        """As fvcore's, naming a ``last_checkpoint`` file that is not the text name of a checkpoint."""
        try:
            path = super().get_checkpoint_file()
        except UnicodeDecodeError as error:
            tag = os.path.join(self.save_dir, "last_checkpoint")
            raise ValueError(
                f"{tag} is not a text file naming a checkpoint (not UTF-8: {error.reason} at byte "
                f"{error.start}); write the name of the checkpoint to resume from into it (e.g. "
                "model_0004999.pth), or delete it to start from train.init_checkpoint"
            ) from error
        if path and os.path.normpath(path) == os.path.normpath(self.save_dir):
            tag = os.path.join(self.save_dir, "last_checkpoint")
            raise ValueError(
                f"{tag} is empty: it names no checkpoint; write the name of the checkpoint to resume from "
                "into it (e.g. model_0004999.pth), or delete it to start from train.init_checkpoint"
            )
        return path

    def resume_or_load(self, path: str, *, resume: bool = True) -> dict[str, Any]:
        """As Detectron2's; resuming this run's own ``last_checkpoint`` is always strict."""
        if resume and self.has_checkpoint():
            strict, self.strict = self.strict, True
            try:
                return self.load(self.get_checkpoint_file())
            finally:
                self.strict = strict
        return self.load(path, checkpointables=[])

    # ------------------------------------------------------------------ reading files
    def _load_file(self, filename: str) -> dict[str, Any]:
        check_checkpoint_file(filename)
        if filename.endswith(".pkl"):
            data = load_restricted_pickle(filename)
            if not isinstance(data, dict):
                raise ValueError(
                    f"Checkpoint file {filename!r} holds a {type(data).__name__}, not a dict of weights"
                )
            if "model" in data and "__author__" in data:  # Detectron2 model-zoo format
                self.logger.info(f"Reading a file from '{data['__author__']}'")
                return data
            if "blobs" in data:  # Caffe2 detection models; ImageNet models have no "blobs"
                data = data["blobs"]
            data = {k: v for k, v in data.items() if not str(k).endswith("_momentum")}
            return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}
        loaded = super()._load_file(filename)
        if not isinstance(loaded.get("model"), dict):
            raise ValueError(
                f"Checkpoint file {filename!r}: expected a state_dict or a dict with a 'model' state_dict, "
                f"got 'model' of type {type(loaded.get('model')).__name__}"
            )
        return loaded

    def _torch_load(self, f: str) -> Any:
        check_zip_members(f)  # torch.load does not compare the members' CRC-32
        try:
            loaded = torch.load(f, map_location=torch.device("cpu"), weights_only=True)
        except pickle.UnpicklingError as error:
            refused = re.search(r"GLOBAL (\S+)", str(error))
            if refused:
                raise UnsafeCheckpointError(
                    f"Refusing to load {f!r}: it asks for the Python global '{refused.group(1)}', which a "
                    "weights file does not need and which could run code (weights-only loading allows "
                    "tensors, numbers, strings and containers)"
                ) from error
            raise ValueError(f"Checkpoint file {f!r} is not a readable checkpoint: {error}") from error
        except (RuntimeError, EOFError, OSError, IndexError, KeyError) as error:  # e.g. truncated
            raise unreadable_checkpoint_error(f, error) from error
        if not isinstance(loaded, dict):
            raise ValueError(f"Checkpoint file {f!r} holds a {type(loaded).__name__}, not a dict of weights")
        return loaded

    # ------------------------------------------------------------------ matching keys
    def _load_model(self, checkpoint: Any) -> _IncompatibleKeys:
        if checkpoint.get("matching_heuristics", False):
            # Detectron2's name matching of Caffe2 / torchvision backbones, done once here
            self._convert_ndarray_to_tensor(checkpoint["model"])
            checkpoint["model"] = align_and_update_state_dicts(
                self.model.state_dict(),
                checkpoint["model"],
                c2_conversion=checkpoint.get("__author__", None) == "Caffe2",
            )
            checkpoint["matching_heuristics"] = False
        self._convert_ndarray_to_tensor(checkpoint["model"])
        if self.strict:
            # load nothing unless everything fits
            incompatible = self._compare(checkpoint["model"])
            lines = describe_incompatible(incompatible)
            bad = non_finite_tensors(checkpoint["model"])
            if bad:
                lines.append(f"{len(bad)} tensor(s) hold NaN/inf values: {_listing(sorted(bad))}")
            depths = describe_depth_differences(self._unwrapped(checkpoint["model"]), self.model.state_dict())
            if depths:
                raise CheckpointMismatchError(
                    f"Checkpoint {self._loading or 'file'!r} holds another architecture than the model, its "
                    f"layer counts differ: {'; '.join(depths)}. Build the model from the config the "
                    "checkpoint was trained with (a converted official checkpoint has its config.yaml beside "
                    f"it). All differences: {'; '.join(lines)}.",
                    incompatible,
                    tuple(depths),
                )
            if lines:
                raise CheckpointMismatchError(
                    f"Checkpoint {self._loading or 'file'!r} does not fit the model: "
                    + "; ".join(lines)
                    + ". It was made for another architecture or number of classes (check the config it was "
                    "trained with, e.g. model.heads.num_classes). Training from a partial checkpoint is "
                    "done with train.init_checkpoint, which loads what fits.",
                    incompatible,
                )
        else:
            # an initialisation with NaN/inf weights would fail as a non-finite loss at iteration 0
            model_state, state = self.model.state_dict(), self._unwrapped(checkpoint["model"])
            bad = [
                key
                for key in non_finite_tensors(state)
                if key in model_state and tuple(model_state[key].shape) == tuple(state[key].shape)
            ]
            if bad:
                raise NonFiniteWeightsError(
                    f"Checkpoint {self._loading or 'file'!r} holds NaN/inf values in {len(bad)} tensor(s) "
                    f"the model would load: {_listing(sorted(bad))}. It comes from a diverged run or a "
                    "damaged file: use another train.init_checkpoint"
                )
        return super()._load_model(checkpoint)

    @staticmethod
    def _unwrapped(state: dict) -> dict:
        """``state`` without the ``module.`` prefix of a DDP-wrapped model's keys."""
        if state and all(str(k).startswith("module.") for k in state):
            return {k[len("module.") :]: v for k, v in state.items()}
        return state

    def _compare(self, checkpoint_state: dict) -> _IncompatibleKeys:
        """The incompatibilities loading ``checkpoint_state`` into the model would have."""
        model_state = self.model.state_dict()
        state = self._unwrapped(dict(checkpoint_state))  # saved from a DDP model: as fvcore
        missing = [k for k in model_state if k not in state and not k.endswith("num_batches_tracked")]
        missing = _filter_reused_missing_keys(self.model, missing) if missing else []
        unexpected = [k for k in state if k not in model_state]
        shapes = [
            (k, tuple(v.shape), tuple(model_state[k].shape))
            for k, v in state.items()
            if k in model_state and hasattr(v, "shape") and tuple(v.shape) != tuple(model_state[k].shape)
        ]
        return _IncompatibleKeys(missing_keys=missing, unexpected_keys=unexpected, incorrect_shapes=shapes)

    def _log_incompatible_keys(self, incompatible: _IncompatibleKeys) -> None:
        # fvcore names a mis-shaped key twice (skipped, then missing); here every key is named once, the
        # mis-shaped ones all of them with their shapes (the re-initialised heads of a fine-tuning run)
        reinitialised = incompatible.incorrect_shapes
        reinitialised_keys = {key for key, _, _ in reinitialised}
        missing = [
            key
            for key in _filter_reused_missing_keys(self.model, incompatible.missing_keys)
            if key not in reinitialised_keys
        ]
        lines = describe_incompatible(incompatible._replace(missing_keys=missing, incorrect_shapes=[]))
        if reinitialised:
            lines.append(
                f"{len(reinitialised)} tensor(s) keep their initialisation, their shape differs from the "
                "checkpoint's (expected when fine-tuning to another number of classes):\n"
                + "\n".join(
                    f"  {key}: {tuple(in_checkpoint)} in the checkpoint, {tuple(in_model)} in the model"
                    for key, in_checkpoint, in_model in reinitialised
                )
            )
        if lines:
            self.logger.warning(
                f"Loaded {self._loading or 'the checkpoint'!r} partially (initialisation); skipped: "
                + "; ".join(lines)
            )


def load_weights(model: torch.nn.Module, path: str, strict: bool = True) -> dict[str, Any]:
    """Load ``path`` (a ``.pth``/``.pkl`` file or a Detectron2 URL) into ``model`` safely; strict by default.

    The single loader of evaluation, the predictors and the demo. An empty ``path`` loads nothing (the model
    keeps its initialisation, as with Detectron2's checkpointer). Returns the checkpoint's other entries.
    """
    return SafeDetectionCheckpointer(model, strict=strict).load(path)


# ---------------------------------------------------------------------------------------------- saving
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


def non_finite_tensors(state_dict: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors of ``state_dict`` that hold NaN or inf."""
    return [
        k
        for k, v in state_dict.items()
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]


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
