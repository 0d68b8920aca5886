"""Look up, load and build the configs of ``configs/`` by name (see the package docstring)."""

from __future__ import annotations

from pathlib import Path

import torch
from detectron2.config import CfgNode, LazyConfig, get_cfg, instantiate
from detectron2.modeling import build_model
from omegaconf import DictConfig

__all__ = [
    "OFFICIAL_CHECKPOINTS",
    "config_root",
    "list_configs",
    "get_config_file",
    "get_config",
    "get",
    "official_checkpoint_url",
    "load_config",
    "build_model_from_config",
    "config_label",
]

_OFFICIAL_BASE_URL = "https://arena.kakaocdn.net/brainrepo/sparse_detr"
# paper config name -> official release (kakaobrain/sparse-detr README, "Main Results")
OFFICIAL_CHECKPOINTS = {
    f"sparse_detr_{backbone}_rho0.{r}_50ep": f"{_OFFICIAL_BASE_URL}/sparse_detr_{backbone}_{r}0.pth"
    for backbone in ("r50", "swint")
    for r in range(1, 6)
}

_CONFIG_SUFFIXES = (".py", ".yaml")


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
    """Every config under ``configs/`` except ``common/``, by name (e.g. ``sparse_detr_r50_rho0.1_50ep``)."""
    root = config_root()
    names = [
        path.relative_to(root).with_suffix("").as_posix()
        for path in root.rglob("*")
        if path.suffix in _CONFIG_SUFFIXES
        and "common" not in path.relative_to(root).parts
        and not path.name.startswith("_")
    ]
    return sorted(names)


def get_config_file(config_path: str) -> str:
    """Absolute path of a model-zoo config.

    Args:
        config_path: a name relative to ``configs/``, with or without its suffix
            (``"sparse_detr_r50_rho0.1_50ep"`` or ``"sparse_detr_r50_rho0.1_50ep.py"``).
    """
    root = config_root()
    candidate = root / config_path
    matches = [candidate] if candidate.suffix in _CONFIG_SUFFIXES else []
    matches += [candidate.with_name(candidate.name + suffix) for suffix in _CONFIG_SUFFIXES]
    for path in matches:
        if path.is_file():
            return str(path)
    raise FileNotFoundError(
        f"{config_path!r} is not in the model zoo ({root}); available: {', '.join(list_configs())}"
    )


def get_config(config_path: str, trained: bool = False) -> DictConfig | CfgNode:
    """Load a model-zoo config: a LazyConfig for ``.py`` files, a yacs ``CfgNode`` for ``.yaml`` files.

    Args:
        config_path: see :func:`get_config_file`.
        trained: point the config at trained weights; always refused (none ship, see :func:`get`).
    """
    if trained:
        _refuse_trained(config_path)
    path = get_config_file(config_path)
    if path.endswith(".py"):
        return LazyConfig.load(path)
    from sparse_detr.config import add_sparse_detr_config

    cfg = add_sparse_detr_config(get_cfg())
    cfg.merge_from_file(path)
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
    """Build the (untrained) model of a model-zoo config, in eval mode.

    Args:
        config_path: see :func:`get_config_file`.
        trained: load trained weights; refused with the official checkpoint link and the convert command.
        device: "cpu" or "cuda"; default: CUDA when available, else CPU.
    """
    return build_model_from_config(get_config(config_path, trained=trained), device)


def config_label(path_or_name: str) -> str:
    """Short name of a config: the model-zoo name, the file stem, or the directory of a ``config.yaml``."""
    if not path_or_name.endswith((".py", ".yaml")):
        return path_or_name
    path = Path(path_or_name)
    return path.parent.name if path.stem == "config" and path.parent.name else path.stem


def official_checkpoint_url(config_path: str) -> str | None:
    """URL of the official checkpoint trained with this config's architecture, or None."""
    name = config_path
    if name.endswith(_CONFIG_SUFFIXES):
        name = name.rsplit(".", 1)[0]
    return OFFICIAL_CHECKPOINTS.get(Path(name).name)


def _refuse_trained(config_path: str) -> None:
    url = official_checkpoint_url(config_path)
    checkpoint = url.rsplit("/", 1)[-1] if url else None
    where = (
        f"the official checkpoint of this config is {url}; convert it with\n"
        f"  python projects/SparseDETR/convert_official.py --input {checkpoint} --output-dir DIR\n"
        "and load DIR/model_final.pth with DetectionCheckpointer (or pass DIR/config.yaml to the tools)"
        if url
        else "no official checkpoint exists for this config"
    )
    raise ValueError(f"trained=True: sparse_detr ships no trained weights for {config_path!r}; {where}")
