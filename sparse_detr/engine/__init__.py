"""Training helpers (param groups, schedules, hooks, safe, atomic checkpoints, a loss guard); predictors."""
from .checkpoint import (
    AtomicDetectionCheckpointer,
    CheckpointMismatchError,
    NonFiniteWeightsError,
    NoSpaceLeftError,
    PersistentPeriodicCheckpointer,
    SafeDetectionCheckpointer,
    atomic_torch_save,
    load_weights,
)
from .hooks import GradientClipper, IterationSeeder
from .loss_guard import FiniteLossGuard, NonFiniteLossError
from .optim import detr_param_groups
from .predictor import LazyConfigPredictor, StrictDefaultPredictor, UntrainedModelError, load_detector_weights
from .schedule import COCO_TRAIN2017_IMAGES, epoch_step_schedule, iterations_per_epoch

__all__ = [
    "AtomicDetectionCheckpointer",
    "COCO_TRAIN2017_IMAGES",
    "CheckpointMismatchError",
    "FiniteLossGuard",
    "GradientClipper",
    "IterationSeeder",
    "LazyConfigPredictor",
    "NoSpaceLeftError",
    "NonFiniteLossError",
    "NonFiniteWeightsError",
    "PersistentPeriodicCheckpointer",
    "SafeDetectionCheckpointer",
    "StrictDefaultPredictor",
    "UntrainedModelError",
    "atomic_torch_save",
    "detr_param_groups",
    "epoch_step_schedule",
    "iterations_per_epoch",
    "load_detector_weights",
    "load_weights",
]
