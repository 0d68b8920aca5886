"""Data: the DETR dataset mapper and augmentations, a resumable training loader, the synthetic shapes set."""
from . import synthetic  # noqa: F401  (registers shapes_train / shapes_val / shapes_tiny_*)
from .augmentations import build_detr_test_augmentations, build_detr_train_augmentations
from .build import build_resumable_train_loader
from .dataset_mapper import DetrDatasetMapper

__all__ = [
    "DetrDatasetMapper",
    "build_detr_test_augmentations",
    "build_detr_train_augmentations",
    "build_resumable_train_loader",
]
