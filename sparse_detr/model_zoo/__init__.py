"""Model zoo: the configs of ``configs/`` by name, in the style of ``detectron2.model_zoo``.

    from sparse_detr import model_zoo
    cfg = model_zoo.get_config("sparse_detr_r50_rho0.1_50ep")   # LazyConfig
    model = model_zoo.get("sparse_detr_r50_rho0.1_50ep")         # untrained nn.Module
    model = model_zoo.get("sparse_detr_r50_rho0.1_50ep", trained=True)   # the official trained model

Trained weights are the official release files, by name: ``sparse_detr://official/<stem>`` (e.g.
``sparse_detr://official/sparse_detr_r50_10``) works wherever Detectron2 reads weights; the file is
downloaded, converted and cached once (``official_weights``).
"""

from .model_zoo import (
    OFFICIAL_CHECKPOINTS,
    build_model_from_config,
    config_label,
    config_root,
    config_weights,
    get,
    get_config,
    get_config_file,
    list_configs,
    load_config,
    load_config_with_overrides,
    official_checkpoint_url,
    official_release_stem,
)
from .official_weights import OFFICIAL_PREFIX, OFFICIAL_RELEASES, ensure_official_release

__all__ = [
    "OFFICIAL_CHECKPOINTS",
    "build_model_from_config",
    "config_label",
    "config_root",
    "config_weights",
    "get",
    "get_config",
    "get_config_file",
    "list_configs",
    "load_config",
    "load_config_with_overrides",
    "official_checkpoint_url",
    "official_release_stem",
    "OFFICIAL_PREFIX",
    "OFFICIAL_RELEASES",
    "ensure_official_release",
]
