"""Training helpers (parameter groups, schedules, hooks, atomic checkpoints, a loss guard) and a predictor."""
from .checkpoint import AtomicDetectionCheckpointer, atomic_torch_save
from .hooks import GradientClipper, IterationSeeder
from .loss_guard import FiniteLossGuard, NonFiniteLossError
from .optim import detr_param_groups
from .predictor import LazyConfigPredictor
from .schedule import COCO_TRAIN2017_IMAGES, epoch_step_schedule, iterations_per_epoch

__all__ = [
    "AtomicDetectionCheckpointer",
    "COCO_TRAIN2017_IMAGES",
    "FiniteLossGuard",
    "GradientClipper",
    "IterationSeeder",
    "LazyConfigPredictor",
    "NonFiniteLossError",
    "atomic_torch_save",
    "detr_param_groups",
    "epoch_step_schedule",
    "iterations_per_epoch",
]
