"""Whether a model's class heads hold trained weights, so that inference can refuse when they do not.

Detectron2's own ``DetectionCheckpointer`` (used by ``DefaultPredictor``, ``lazyconfig_train_net.py
--eval-only``) loads whatever fits and only warns about the rest: weights written for another model (a
quickstart checkpoint with the R-50 defaults, another number of classes) or a backbone-only file leave the
class heads random, and the model then returns its top-100 random detections without any error. The model
sees every ``load_state_dict`` through a post-hook: when the class heads were missing from the loaded weights
(fvcore drops mis-shaped tensors before loading, so they count as missing), :func:`refuse_untrained_heads`
stops inference, naming the weights. Training clears the mark (the heads are then being trained), so
fine-tuning from a backbone or from another number of classes evaluates normally.
"""

from __future__ import annotations

from torch import nn

__all__ = ["HOW_TO_GET_WEIGHTS", "UntrainedModelError", "record_loaded_heads", "refuse_untrained_heads"]

HOW_TO_GET_WEIGHTS = (
    "Give trained weights: an official COCO model by name (sparse_detr://official/sparse_detr_r50_10, "
    "..._swint_10, ..._r50_scrl_10, rho 10..50 %; downloaded once), a checkpoint converted with "
    "projects/SparseDETR/convert_official.py, or a model_final.pth written by train_net.py"
)
CLASS_HEAD_KEY = ".class_heads."


class UntrainedModelError(ValueError):
    """The weights given to a model or predictor leave its detection heads untrained."""


def record_loaded_heads(module: nn.Module, incompatible) -> None:
    """``load_state_dict`` post-hook: mark ``module`` whose class heads were missing from the loaded weights.

    Sets ``module.untrained_heads`` to a description of what was missing, or None when the heads loaded.
    """
    missing = sorted(key for key in incompatible.missing_keys if CLASS_HEAD_KEY in f".{key}")
    if not missing:
        module.untrained_heads = None
        return
    module.untrained_heads = (
        f"{len(missing)} class-head tensor(s) (e.g. {missing[0]}) were missing from the loaded weights or "
        f"had another shape there ({len(incompatible.missing_keys)} model key(s) in all were not loaded)"
    )


def refuse_untrained_heads(model: nn.Module) -> None:
    """Raise :class:`UntrainedModelError` when the weights loaded last left ``model``'s class heads random.

    A model never loaded (just built: tests, benchmarks, export of an architecture) is not refused.
    """
    reason = getattr(model, "untrained_heads", None)
    if reason is None:
        return
    name = getattr(model, "weights_name", "")
    weights = f"the weights {name!r}" if name else "the weights loaded into it"
    raise UntrainedModelError(
        f"{type(model).__name__} refuses to predict with {weights}: {reason}, so its detections "
        "would be meaningless. The weights were written for another model (another backbone, width or "
        "number of classes: use the config they were trained with, e.g. the config.yaml beside a "
        f"model_final.pth) or hold a backbone only. {HOW_TO_GET_WEIGHTS}"
    )
