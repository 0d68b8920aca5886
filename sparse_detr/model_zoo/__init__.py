"""Model zoo: the configs of ``configs/`` by name, in the style of ``detectron2.model_zoo``.

    from sparse_detr import model_zoo
    cfg = model_zoo.get_config("sparse_detr_r50_rho0.1_50ep")   # LazyConfig
    model = model_zoo.get("sparse_detr_r50_rho0.1_50ep")         # untrained nn.Module

No trained weights ship with the project: ``official_checkpoint_url(name)`` gives the official release of a
paper config, which ``projects/SparseDETR/convert_official.py`` turns into a Detectron2 checkpoint.
"""

from .model_zoo import (
    OFFICIAL_CHECKPOINTS,
    build_model_from_config,
    config_label,
    config_root,
    get,
    get_config,
    get_config_file,
    list_configs,
    load_config,
    official_checkpoint_url,
)

__all__ = [
    "OFFICIAL_CHECKPOINTS",
    "build_model_from_config",
    "config_label",
    "config_root",
    "get",
    "get_config",
    "get_config_file",
    "list_configs",
    "load_config",
    "official_checkpoint_url",
]
