"""How the project's command-line tools (``projects/SparseDETR``, ``benchmarks``) read ``--config-file``.

Not public API: a user loads configs with ``model_zoo.get_config`` or ``LazyConfig.load``. A tool takes a
config file (LazyConfig ``.py`` / ``.yaml``, or a yacs ``.yaml``) or a model-zoo name, plus command-line
overrides, weights and a device.
"""

from __future__ import annotations

from pathlib import Path

from detectron2.config import CfgNode, LazyConfig, get_cfg
from omegaconf import DictConfig

from sparse_detr.config.safe_yaml import check_config_file
from sparse_detr.config.validation import check_command_line_overrides
from sparse_detr.data.catalog import register_config_datasets

from .model_zoo import get_config


def _read_config(path_or_name: str) -> DictConfig | CfgNode:
    """A config file (LazyConfig ``.py``/``.yaml`` or yacs ``.yaml``) or a model-zoo name.

    A ``.yaml`` file with a top-level ``model`` key (as written by ``LazyConfig.save``, e.g. by
    ``convert_official.py``) is a LazyConfig; one with ``MODEL`` is a yacs config, merged on top of
    ``add_sparse_detr_config(get_cfg())``.
    """
    path = Path(path_or_name)
    if not path.is_file():
        return get_config(path_or_name)
    check_config_file(path)
    if path.suffix == ".py":
        return LazyConfig.load(str(path))
    if path.suffix != ".yaml":
        raise ValueError(f"{path}: a config must be a .py (LazyConfig) or .yaml file")
    lazy = LazyConfig.load(str(path))
    if "model" in lazy:
        return lazy
    if "MODEL" not in lazy:
        raise ValueError(f"{path}: neither a LazyConfig (top-level 'model') nor a yacs config ('MODEL')")
    from sparse_detr.config import add_sparse_detr_config

    cfg = add_sparse_detr_config(get_cfg())
    cfg.merge_from_file(str(path))
    return cfg


def load_tool_config(
    path_or_name: str,
    opts: list[str] = (),
    weights: str | None = None,
    device: str | None = None,
    usage: str = "--config-file CONFIG [options]",
) -> DictConfig | CfgNode:
    """Config from a file or model-zoo name, with ``opts`` overrides, and weights / device when given.

    The overrides are checked as ``train_net.py`` checks its own (options first, known keys, value kinds;
    see :func:`sparse_detr.config.validation.check_command_line_overrides`); ``usage`` is the command line
    shown when an option comes after them. The config's ``datasets.coco_json`` entries are registered (a
    tool's ``--dataset my_val`` finds them).
    """
    cfg = _read_config(path_or_name)
    opts = list(opts)
    check_command_line_overrides(cfg, opts, usage)
    if isinstance(cfg, CfgNode):
        cfg.merge_from_list(opts)
        if weights is not None:
            cfg.MODEL.WEIGHTS = weights
        if device is not None:
            cfg.MODEL.DEVICE = device
    else:
        cfg = LazyConfig.apply_overrides(cfg, opts)
        if weights is not None:
            cfg.train.init_checkpoint = weights
        if device is not None:
            cfg.train.device = device
        register_config_datasets(cfg)
    return cfg


def config_label(path_or_name: str) -> str:
    """Short name of a config: the model-zoo name, the file stem, or the directory of a ``config.yaml``."""
    if not path_or_name.endswith((".py", ".yaml")):
        return path_or_name
    path = Path(path_or_name)
    return path.parent.name if path.stem == "config" and path.parent.name else path.stem
