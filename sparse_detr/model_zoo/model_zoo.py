"""Look up, load and build the configs of ``configs/`` by name (see the package docstring)."""

from __future__ import annotations

from pathlib import Path

import torch
from detectron2.config import CfgNode, LazyConfig, get_cfg, instantiate
from detectron2.modeling import build_model
from omegaconf import DictConfig, OmegaConf

from sparse_detr.config.safe_yaml import check_config_file
from sparse_detr.config.validation import check_command_line_overrides
from sparse_detr.data.catalog import register_config_datasets

from .official_weights import (
    OFFICIAL_PREFIX,
    OFFICIAL_RELEASES,
    ensure_official_release,
    official_release_url,
)

__all__ = [
    "OFFICIAL_CHECKPOINTS",
    "config_root",
    "list_configs",
    "get_config_file",
    "get_config",
    "get",
    "official_checkpoint_url",
    "official_release_stem",
    "load_config",
    "build_model_from_config",
    "config_label",
    "config_weights",
    "load_config_with_overrides",
]

# paper config name -> stem of the official release file trained with it (official README, "Main Results")
OFFICIAL_CHECKPOINTS = {
    f"sparse_detr_{backbone}_rho0.{r}_50ep": f"sparse_detr_{backbone}_{r}0"
    for backbone in ("r50", "swint")
    for r in range(1, 6)
}

_CONFIG_SUFFIXES = (".py", ".yaml")
# the yacs twins of the LazyConfig models (Detectron2-style yaml with _BASE_ files named Base-*.yaml)
YACS_DIR = "yacs"


def config_root() -> Path:
    """The directory of the model-zoo configs.

    An installed package holds them in ``sparse_detr/model_zoo/configs`` (a symlink to the repository's
    ``configs/`` in a source checkout, created by ``setup.py``); a checkout used without installing
    falls back to its ``configs/``.
    """
    packaged = Path(__file__).resolve().parent / "configs"
    if packaged.is_dir():
        return packaged.resolve()
    checkout = Path(__file__).resolve().parents[2] / "configs"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(
        f"the model-zoo configs are missing: neither {packaged} (installed package) nor {checkout} (source "
        "checkout) exists; reinstall sparse_detr (pip install .) or run it from a source checkout"
    )


def list_configs() -> list[str]:
    """Every config under ``configs/`` except ``common/`` and yacs bases, by name.

    LazyConfigs without their suffix (``sparse_detr_r50_rho0.1_50ep``), their yacs twins with it
    (``yacs/sparse_detr_r50_rho0.1_50ep.yaml``).
    """
    root = config_root()
    names = [
        path.relative_to(root).with_suffix("" if path.suffix == ".py" else path.suffix).as_posix()
        for path in root.rglob("*")
        if path.suffix in _CONFIG_SUFFIXES
        and "common" not in path.relative_to(root).parts
        and not path.name.startswith(("_", "Base-"))
    ]
    return sorted(names)


def get_config_file(config_path: str) -> str:
    """Absolute path of a model-zoo config.

    Args:
        config_path: a name relative to ``configs/``, with or without its suffix
            (``"sparse_detr_r50_rho0.1_50ep"`` or ``"sparse_detr_r50_rho0.1_50ep.py"``: the LazyConfig);
            a ``.yaml`` name is the yacs twin, in ``configs/yacs/`` (``"sparse_detr_r50_rho0.1_50ep.yaml"``
            or ``"yacs/sparse_detr_r50_rho0.1_50ep.yaml"``).
    """
    root = config_root()
    candidate = root / config_path
    matches = [candidate] if candidate.suffix in _CONFIG_SUFFIXES else []
    if candidate.suffix == ".yaml":
        matches.append(root / YACS_DIR / config_path)
    matches += [candidate.with_name(candidate.name + suffix) for suffix in _CONFIG_SUFFIXES]
    for path in matches:
        if path.is_file():
            return str(path)
    raise FileNotFoundError(
        f"{config_path!r} is not in the model zoo ({root}); available: {', '.join(list_configs())}"
    )


def get_config(config_path: str, trained: bool = False) -> DictConfig | CfgNode:
    """Load a model-zoo config: a LazyConfig for ``.py`` files, a yacs ``CfgNode`` for ``.yaml`` files
    (merged on top of ``add_sparse_detr_config(get_cfg())``, ready for ``DefaultPredictor``).

    Args:
        config_path: see :func:`get_config_file`.
        trained: start from the official weights trained with this config: ``train.init_checkpoint`` becomes
            ``sparse_detr://official/<release file stem>`` (downloaded and converted on first use).
            Configs without an official release are refused.
    """
    stem = _official_stem_or_refuse(config_path) if trained else None
    path = get_config_file(config_path)
    check_config_file(path)
    if path.endswith(".py"):
        cfg = LazyConfig.load(path)
        if stem:
            cfg.train.init_checkpoint = OFFICIAL_PREFIX + stem
        return cfg
    from sparse_detr.config import add_sparse_detr_config

    cfg = add_sparse_detr_config(get_cfg())
    cfg.merge_from_file(path)
    if stem:
        cfg.MODEL.WEIGHTS = OFFICIAL_PREFIX + stem
    return cfg


def load_config(path_or_name: str) -> DictConfig | CfgNode:
    """Load a config file (LazyConfig ``.py``/``.yaml`` or yacs ``.yaml``) or a model-zoo name.

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


def build_model_from_config(cfg: DictConfig | CfgNode, device: str | None = None) -> torch.nn.Module:
    """The model of a LazyConfig (``cfg.model``) or yacs config (``build_model``), in eval mode on ``device``.

    ``device`` defaults to CUDA when available, else CPU.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(cfg, CfgNode):
        cfg = cfg.clone()
        cfg.MODEL.DEVICE = device
        model = build_model(cfg)
    else:
        model = instantiate(cfg.model).to(device)
    return model.eval()


def get(config_path: str, trained: bool = False, device: str | None = None) -> torch.nn.Module:
    """Build the model of a model-zoo config, in eval mode.

    Args:
        config_path: see :func:`get_config_file`; with ``trained=True`` also a release file stem of
            :data:`~sparse_detr.model_zoo.official_weights.OFFICIAL_RELEASES` (e.g. the SCRL models).
        trained: the official trained model: its release file is downloaded and converted once (cached, see
            ``sparse_detr.model_zoo.official_weights``) and the model is built from the converted config,
            which reproduces the official architecture exactly, with every weight loaded (strict).
            Untrained: the config's model with random (or backbone-initialised) weights.
        device: "cpu" or "cuda"; default: CUDA when available, else CPU.
    """
    if not trained:
        return build_model_from_config(get_config(config_path), device)
    from sparse_detr.checkpoint import load_converted_weights

    release = ensure_official_release(_official_stem_or_refuse(config_path))
    model = build_model_from_config(LazyConfig.load(str(release.config)), "cpu")
    checkpoint = torch.load(release.weights, map_location="cpu", weights_only=True)
    load_converted_weights(model, checkpoint["model"])
    return model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def config_label(path_or_name: str) -> str:
    """Short name of a config: the model-zoo name, the file stem, or the directory of a ``config.yaml``."""
    if not path_or_name.endswith((".py", ".yaml")):
        return path_or_name
    path = Path(path_or_name)
    return path.parent.name if path.stem == "config" and path.parent.name else path.stem


def official_release_stem(config_path: str) -> str | None:
    """Stem of the official release file of a paper config (or of a release stem itself), else None."""
    name = Path(config_path).name
    if name.endswith(_CONFIG_SUFFIXES):
        name = name.rsplit(".", 1)[0]
    if name in OFFICIAL_RELEASES:
        return name
    return OFFICIAL_CHECKPOINTS.get(name)


def official_checkpoint_url(config_path: str) -> str | None:
    """URL of the official checkpoint trained with this config's architecture, or None.

    ``$SPARSE_DETR_OFFICIAL_URL`` replaces the official server.
    """
    stem = official_release_stem(config_path)
    return official_release_url(stem) if stem else None


def _official_stem_or_refuse(config_path: str) -> str:
    stem = official_release_stem(config_path)
    if stem is None:
        raise ValueError(
            f"trained=True: no official checkpoint was trained with {config_path!r}; official weights exist "
            f"for {', '.join(sorted(OFFICIAL_CHECKPOINTS))} and the release files "
            f"{', '.join(OFFICIAL_RELEASES)}"
        )
    return stem

def load_config_with_overrides(
    path_or_name: str,
    opts: list[str],
    weights: str | None = None,
    device: str | None = None,
    usage: str = "--config-file CONFIG [options]",
):
    """Config from a file or model-zoo name, with ``opts`` overrides, and weights / device when given.

    The overrides are checked as ``train_net.py`` checks its own (options first, known keys, value kinds;
    see :func:`sparse_detr.config.validation.check_command_line_overrides`); ``usage`` is the command line
    shown when an option comes after them. The config's ``datasets.coco_json`` entries are registered (a
    tool's ``--dataset my_val`` finds them).
    """
    cfg = load_config(path_or_name)
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


def config_weights(cfg) -> str:
    """The weights a config names: ``MODEL.WEIGHTS`` (yacs) or ``train.init_checkpoint`` (LazyConfig)."""
    if isinstance(cfg, CfgNode):
        return cfg.MODEL.WEIGHTS
    return OmegaConf.select(cfg, "train.init_checkpoint", default="") or ""
