"""Data: the DETR dataset mapper and augmentations, a resumable training loader, the synthetic shapes set."""
from . import synthetic  # noqa: F401  (registers shapes_train / shapes_val / shapes_tiny_*)
from .augmentations import RandomChoice, build_detr_test_augmentations, build_detr_train_augmentations
from .build import build_dataset_test_loader, build_resumable_train_loader
from .catalog import (
    category_ids,
    check_dataset_names,
    class_names,
    detection_dataset_dicts,
    register_coco_json_datasets,
    register_config_datasets,
)
from .dataset_mapper import DetrDatasetMapper, UnreadableImageError

__all__ = [
    "DetrDatasetMapper",
    "RandomChoice",
    "UnreadableImageError",
    "build_detr_test_augmentations",
    "build_detr_train_augmentations",
    "build_dataset_test_loader",
    "build_resumable_train_loader",
    "check_dataset_names",
    "check_datasets_ahead",
    "category_ids",
    "class_names",
    "detection_dataset_dicts",
    "register_coco_json_datasets",
    "register_config_datasets",
]
