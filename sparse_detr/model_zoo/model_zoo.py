"""Look up, load and build the configs of ``configs/`` by name (see the package docstring)."""

from __future__ import annotations

from pathlib import Path

import torch
from detectron2.config import CfgNode, LazyConfig, get_cfg, instantiate
from detectron2.modeling import build_model
from detectron2.utils.file_io import PathManager
from omegaconf import DictConfig

from ..checkpoint.safe_loading import SafeDetectionCheckpointer
from ..config.safe_yaml import check_config_file
from .official_weights import OFFICIAL_PREFIX, OFFICIAL_RELEASES, official_release_url

__all__ = ["get", "get_checkpoint_url", "get_config", "list_configs"]

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


def find_config_file(config_path: str) -> str:
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


def get_config(config_path: str) -> DictConfig | CfgNode:
    """A model-zoo config by name: a LazyConfig, or for a ``.yaml`` name its yacs twin (a ``CfgNode``
    merged on top of ``add_sparse_detr_config(get_cfg())``, ready for Detectron2's ``DefaultPredictor``).

    Args:
        config_path: ``"sparse_detr_r50_rho0.1_50ep"`` (LazyConfig) or ``"sparse_detr_r50_rho0.1_50ep.yaml"``
            (yacs), as :func:`list_configs` names them. Trained weights: set ``train.init_checkpoint`` /
            ``MODEL.WEIGHTS`` to ``sparse_detr://official/<release stem>`` (:func:`get_checkpoint_url`).
    """
    path = find_config_file(config_path)
    check_config_file(path)
    if path.endswith(".py"):
        return LazyConfig.load(path)
    from sparse_detr.config import add_sparse_detr_config

    cfg = add_sparse_detr_config(get_cfg())
    cfg.merge_from_file(path)
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
        config_path: see :func:`get_config`; with ``trained=True`` also a release file stem of
            :data:`~sparse_detr.model_zoo.official_weights.OFFICIAL_RELEASES` (e.g. the SCRL models).
        trained: the official trained model: ``sparse_detr://official/<release stem>`` (downloaded and
            converted once, cached) loaded strictly into the model of the converted config beside it, which
            reproduces the official architecture exactly. Untrained: the config's model with random (or
            backbone-initialised) weights.
        device: "cpu" or "cuda"; default: CUDA when available, else CPU.
    """
    if not trained:
        return build_model_from_config(get_config(config_path), device)
    weights = OFFICIAL_PREFIX + _official_stem_or_refuse(config_path)
    converted = Path(PathManager.get_local_path(weights)).with_name("config.yaml")
    check_config_file(converted)
    model = build_model_from_config(LazyConfig.load(str(converted)), device)
    SafeDetectionCheckpointer(model, strict=True).load(weights)
    return model


def official_release_stem(config_path: str) -> str | None:
    """Stem of the official release file of a paper config (or of a release stem itself), else None."""
    name = Path(config_path).name
    if name.endswith(_CONFIG_SUFFIXES):
        name = name.rsplit(".", 1)[0]
    if name in OFFICIAL_RELEASES:
        return name
    return OFFICIAL_CHECKPOINTS.get(name)


def get_checkpoint_url(config_path: str) -> str | None:
    """URL of the official checkpoint trained with this config's architecture (or release stem), or None.

    ``$SPARSE_DETR_OFFICIAL_URL`` replaces the official server.
    """
    stem = official_release_stem(config_path)
    return official_release_url(stem) if stem else None


def _official_stem_or_refuse(config_path: str) -> str:
    stem = official_release_stem(config_path)
    if stem is None:
        raise ValueError(
            f"no official checkpoint was trained with {config_path!r}; official weights exist "
            f"for {', '.join(sorted(OFFICIAL_CHECKPOINTS))} and the release files "
            f"{', '.join(OFFICIAL_RELEASES)}"
        )
    return stem
