"""What the command-line tools of this folder share: predictors, model inputs, class names, the inference
keep ratio and image inputs (the scripts run with this folder on ``sys.path``).

A config is a LazyConfig or a yacs ``CfgNode`` (see ``sparse_detr.model_zoo.load_config``); this module is the
one place of the tools that tells them apart, so the tools do not.
"""

from __future__ import annotations

import glob
import logging
from pathlib import Path

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.config import LazyCall as L
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from detectron2.engine import DefaultPredictor
from omegaconf import OmegaConf

from sparse_detr.data import build_detr_test_augmentations
from sparse_detr.data.augmentations import apply_augmentations
from sparse_detr.data.image_io import read_image
from sparse_detr.engine import LazyConfigPredictor, StrictDefaultPredictor
from sparse_detr.utils.input_checks import check_image_array

__all__ = [
    "build_predictor",
    "predict_bgr",
    "prepare_input",
    "set_inference_keep_ratio",
    "num_model_classes",
    "class_names",
    "expand_inputs",
    "read_image_or_none",
    "dataset_entries",
]

logger = logging.getLogger("sparse_detr.apps")  # under the tools' setup_logger(name="sparse_detr")

OFFICIAL_COCO_LOGITS = 91
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")






def build_predictor(cfg) -> DefaultPredictor | LazyConfigPredictor:
    """``DefaultPredictor`` (loading strictly) for a yacs config, ``LazyConfigPredictor`` for a LazyConfig.

    A LazyConfig without test data (e.g. the model-only ``config.yaml`` of ``convert_official.py``) gets the
    official test resize: shorter side 800, longer side at most 1333. Weights that leave the detection heads
    untrained are refused (``UntrainedModelError``).
    """
    if isinstance(cfg, CfgNode):
        return StrictDefaultPredictor(cfg)
    if OmegaConf.select(cfg, "dataloader.test.mapper.augmentations") is None:
        official_resize = L(build_detr_test_augmentations)(min_size=800, max_size=1333)
        OmegaConf.update(cfg, "dataloader.test.mapper.augmentations", official_resize, merge=False)
    return LazyConfigPredictor(cfg, cfg.train.init_checkpoint, cfg.train.device)


def predict_bgr(
    predictor: StrictDefaultPredictor | LazyConfigPredictor, image_bgr: np.ndarray, name: str = "image"
) -> dict:
    """The predictor's output (``{"instances": ...}`` in original-image pixels) for an (H, W, 3) BGR image.

    ``name`` is how errors call the image (e.g. its file name).
    """
    if isinstance(predictor, LazyConfigPredictor):
        return predictor(image_bgr, image_format="BGR", name=name)
    return predictor(image_bgr, name=name)  # StrictDefaultPredictor takes BGR images


def prepare_input(
    predictor: DefaultPredictor | LazyConfigPredictor, image_bgr: np.ndarray, name: str = "image"
) -> dict:
    """The model input the predictor would build for this (H, W, 3) BGR image (resize + channel order)."""
    check_image_array(image_bgr, "BGR", name)
    height, width = image_bgr.shape[:2]
    image = image_bgr[:, :, ::-1] if predictor.input_format == "RGB" else image_bgr
    augmentations = predictor.aug if isinstance(predictor, DefaultPredictor) else predictor.augmentations
    resized, _ = apply_augmentations(augmentations, np.ascontiguousarray(image), name)
    tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)).astype("float32"))
    return {"image": tensor, "height": height, "width": width}




def set_inference_keep_ratio(model: torch.nn.Module, rho: float) -> None:
    """Dynamic sparsification: the keeping ratio used at inference (``--rho``)."""
    if getattr(model, "token_scorer", None) is None:
        raise ValueError(f"--rho {rho}: this model has no token scorer (dense encoder)")
    model.set_keep_ratio(model.token_scorer.keep_ratio, test_keep_ratio=rho)


def num_model_classes(model: torch.nn.Module) -> int:
    """Number of logits of the model's class heads."""
    return model.heads.class_heads[0].out_features


def class_names(cfg, num_classes: int) -> list[str]:
    """Class names of the config's test dataset.

    Without them (a model-only config): the COCO names of a converted official model (91 logits: label =
    category id; 80: Detectron2's contiguous order), else the label numbers.
    """
    from detectron2.data import MetadataCatalog

    if isinstance(cfg, CfgNode):
        dataset = cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else None
    else:
        dataset = cfg.get("dataloader", {}).get("test", {}).get("dataset", {}).get("names")
        dataset = dataset[0] if isinstance(dataset, (list, tuple)) else dataset
    names = MetadataCatalog.get(dataset).get("thing_classes") if dataset else None
    if names and len(names) >= num_classes:
        return list(names)
    if num_classes == OFFICIAL_COCO_LOGITS:  # converted official model: label = COCO category id
        by_id = {c["id"]: c["name"] for c in COCO_CATEGORIES if c["isthing"]}
        return [by_id.get(i, str(i)) for i in range(num_classes)]
    coco_names = [c["name"] for c in COCO_CATEGORIES if c["isthing"]]
    if num_classes == len(coco_names):  # converted with --coco-contiguous (as sparse_detr://official/ does)
        return coco_names
    return [str(i) for i in range(num_classes)]




def expand_inputs(patterns: list[str]) -> list[str]:
    """Files named by paths, directories (their image files) or glob patterns, in order, without repeats.

    A path that names nothing is kept, so that reading it reports it.
    """
    files = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            files += sorted(str(p) for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        elif any(c in pattern for c in "*?["):
            files += sorted(glob.glob(pattern, recursive=True))
        else:
            files.append(pattern)
    return list(dict.fromkeys(files))


def read_image_or_none(path: str) -> np.ndarray | None:
    """(H, W, 3) BGR uint8, or None (with a warning naming the file) when it cannot be read."""
    try:
        return read_image(path, format="BGR")
    except Exception as error:  # PIL raises several types for bad files; report any and go on
        logger.warning("skipping %s: cannot read it as an image (%s: %s)", path, type(error).__name__, error)
        return None


def dataset_entries(dataset: str, count: int) -> list[tuple[str, np.ndarray]]:
    """(name, BGR image) of the first ``count`` entries of a registered dataset."""
    from detectron2.data import DatasetCatalog

    entries = []
    for record in DatasetCatalog.get(dataset)[:count]:
        image = read_image_or_none(record["file_name"])
        if image is not None:
            entries.append((Path(record["file_name"]).stem, image))
    return entries


