"""Training helpers: optimiser parameter groups, schedules, hooks, an atomic checkpointer, a loss guard."""
from .checkpoint import AtomicDetectionCheckpointer, atomic_torch_save
from .hooks import GradientClipper, IterationSeeder
from .loss_guard import FiniteLossGuard, NonFiniteLossError
from .optim import detr_param_groups
from .schedule import COCO_TRAIN2017_IMAGES, epoch_step_schedule, iterations_per_epoch

__all__ = [
    "AtomicDetectionCheckpointer",
    "COCO_TRAIN2017_IMAGES",
    "FiniteLossGuard",
    "GradientClipper",
    "IterationSeeder",
    "NonFiniteLossError",
    "atomic_torch_save",
    "detr_param_groups",
    "epoch_step_schedule",
    "iterations_per_epoch",
]
