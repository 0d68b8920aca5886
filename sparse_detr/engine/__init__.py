"""The predictor, the safe strict checkpointer (the one weights loader), and training helpers (the clipped
optimizer and its param groups, atomic checkpoints)."""

from ..checkpoint.safe_loading import CheckpointMismatchError, SafeDetectionCheckpointer
from .checkpoint import AtomicDetectionCheckpointer
from .optim import ClippedAdamW, detr_param_groups
from .predictor import Predictor, UntrainedModelError

__all__ = [
    "AtomicDetectionCheckpointer",
    "CheckpointMismatchError",
    "ClippedAdamW",
    "Predictor",
    "SafeDetectionCheckpointer",
    "UntrainedModelError",
    "detr_param_groups",
]
