"""Official-checkpoint conversion: key map (official -> ours) and official args -> LazyConfig."""

from .convert import (
    CheckpointMismatch,
    OfficialCheckpoint,
    build_converted_model,
    convert_official_checkpoint,
    load_converted_weights,
    load_official_checkpoint,
)
from .key_map import KEY_RULES, UnknownOfficialKeys, convert_official_state_dict, map_official_key
from .official_config import (
    COCO_CONTIGUOUS_CATEGORY_IDS,
    OFFICIAL_PIXEL_MEAN,
    OFFICIAL_PIXEL_STD,
    UnsupportedOfficialArgs,
    official_model_config,
    official_num_classes,
)

__all__ = [
    "COCO_CONTIGUOUS_CATEGORY_IDS",
    "CheckpointMismatch",
    "KEY_RULES",
    "OFFICIAL_PIXEL_MEAN",
    "OFFICIAL_PIXEL_STD",
    "OfficialCheckpoint",
    "UnknownOfficialKeys",
    "UnsupportedOfficialArgs",
    "build_converted_model",
    "convert_official_checkpoint",
    "convert_official_state_dict",
    "load_converted_weights",
    "load_official_checkpoint",
    "map_official_key",
    "official_model_config",
    "official_num_classes",
]
