"""The project's predictor: a model-zoo name, a LazyConfig or a yacs config, plus weights -> detections.

Weights load through :class:`~sparse_detr.engine.checkpoint.SafeDetectionCheckpointer`, strictly: no code runs
from a ``.pkl``, a checkpoint that does not fit the model is refused with its keys named, and weights that
leave the detection heads untrained (none, a backbone initialisation, another number of classes) are refused
with how to get trained ones (:class:`UntrainedModelError`): random class heads draw an empty or meaningless
picture without any error. The refusal is made here, when weights are loaded; the model itself predicts with
whatever it holds (Detectron2's own tools load it as they load any model).
"""

from __future__ import annotations

import numpy as np
import torch
from detectron2.config import CfgNode, instantiate
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from omegaconf import OmegaConf

from ..checkpoint.safe_loading import CheckpointMismatchError, SafeDetectionCheckpointer
from ..data.augmentations import apply_augmentations, build_detr_test_augmentations
from ..utils.input_checks import check_image_array, check_input_format

__all__ = ["Predictor", "UntrainedModelError"]

HOW_TO_GET_WEIGHTS = (
    "Give trained weights: an official COCO model by name (sparse_detr://official/sparse_detr_r50_10, "
    "..._swint_10, ..._r50_scrl_10, rho 10..50 %; downloaded once), a checkpoint converted with "
    "projects/SparseDETR/convert_official.py, or a model_final.pth written by train_net.py"
)
# weights that initialise the backbone only (training starting points, not detectors)
BACKBONE_INITIALISATIONS = ("detectron2://ImageNetPretrained/",)
CLASS_HEAD_KEY = ".class_heads."
# the official test resize, for a LazyConfig without test data (e.g. convert_official.py's config.yaml)
OFFICIAL_TEST_RESIZE = {"min_size": 800, "max_size": 1333}


class UntrainedModelError(ValueError):
    """The weights given to a predictor leave the model's detection heads untrained."""


def _refuse_missing_weights(weights: str) -> None:
    """Refuse, before anything is built or downloaded, no weights or a backbone-only initialisation."""
    if not weights:
        raise UntrainedModelError(
            f"no weights given: the model's detection heads are untrained. {HOW_TO_GET_WEIGHTS}"
        )
    if weights.startswith(BACKBONE_INITIALISATIONS):
        raise UntrainedModelError(
            f"{weights} initialises the backbone only (a training starting point): the model's detection "
            f"heads would be untrained. {HOW_TO_GET_WEIGHTS}"
        )


def _load_detector_weights(model: torch.nn.Module, weights: str) -> None:
    """Load ``weights`` into ``model`` strictly, refusing weights that cannot make it a detector.

    Raises:
        UntrainedModelError: no weights, a backbone initialisation, or a checkpoint without (fitting) class
            heads (a backbone-only checkpoint, or one trained for another number of classes).
        CheckpointMismatchError: any other key or shape that does not fit the model, or layer stacks of
            other depths than the model's (a checkpoint of another architecture than the config's).
    """
    _refuse_missing_weights(weights)
    try:
        SafeDetectionCheckpointer(model, strict=True).load(weights)
    except CheckpointMismatchError as error:
        if error.architecture:  # other layer counts: the config is at fault, not missing class heads
            raise
        incompatible = error.incompatible
        unfit = set(incompatible.missing_keys) | {key for key, _, _ in incompatible.incorrect_shapes}
        if any(CLASS_HEAD_KEY in f".{key}" for key in unfit):
            raise UntrainedModelError(
                f"{weights} holds no weights for the model's class heads (a backbone-only checkpoint, or one "
                f"trained for another number of classes): its detections would be meaningless. ({error}) "
                f"{HOW_TO_GET_WEIGHTS}"
            ) from error
        raise


class Predictor:
    """Builds a model, loads trained weights (strictly) and predicts on one image at a time.

    The image is resized with the config's test resize (a LazyConfig's
    ``dataloader.test.mapper.augmentations``, else the official shorter side 800 / longer side at most 1333;
    a yacs config's ``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``, as Detectron2's ``DefaultPredictor``) and
    converted to the model's channel order; predictions come back in the original image's pixel coordinates.

    Example::

        predictor = Predictor("sparse_detr_r50_rho0.1_50ep", weights="sparse_detr://official/sparse_detr_r50_10")
        outputs = predictor(cv2.imread("photo.jpg"))   # {"instances": Instances}

    Attributes:
        model: the built model (``SparseDETR``), in eval mode; ``model.set_keep_ratio(rho)`` changes rho.
    """

    def __init__(
        self,
        config: str | CfgNode | object,
        weights: str | None = None,
        *,
        device: str | None = None,
        image_format: str = "BGR",
    ):
        """
        Args:
            config: a model-zoo name (``sparse_detr.model_zoo.get_config``: ``"<name>"`` is the LazyConfig,
                ``"<name>.yaml"`` its yacs twin), a LazyConfig, or a yacs ``CfgNode``.
            weights: a checkpoint file, URL or ``sparse_detr://official/<release stem>``; default: the
                config's ``train.init_checkpoint`` (LazyConfig) / ``MODEL.WEIGHTS`` (yacs).
            device: "cpu", "cuda", ...; default: the config's ``train.device`` / ``MODEL.DEVICE``, else CUDA
                when available.
            image_format: channel order of the images given: "BGR" (as Detectron2's ``DefaultPredictor``,
                what ``cv2.imread`` gives) or "RGB".
        Raises:
            UntrainedModelError: weights that leave the detection heads untrained (checked before anything
                is built when none or a backbone initialisation is given).
            CheckpointMismatchError: weights of another architecture.
        """
        self.image_format = check_input_format(image_format, "image_format")
        if isinstance(config, str):
            from ..model_zoo import get_config

            config = get_config(config)
        if isinstance(config, CfgNode):
            cfg = config.clone()
            cfg.defrost()
            weights = cfg.MODEL.WEIGHTS if weights is None else weights
            cfg.MODEL.DEVICE = device or cfg.MODEL.DEVICE
            _refuse_missing_weights(weights)
            self.model = build_model(cfg)
            min_size = cfg.INPUT.MIN_SIZE_TEST
            augmentations = [T.ResizeShortestEdge([min_size, min_size], cfg.INPUT.MAX_SIZE_TEST)]
        else:
            cfg = config
            if weights is None:
                weights = OmegaConf.select(cfg, "train.init_checkpoint", default="") or ""
            device = device or OmegaConf.select(cfg, "train.device", default=None)
            _refuse_missing_weights(weights)
            self.model = instantiate(cfg.model).to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            resize = OmegaConf.select(cfg, "dataloader.test.mapper.augmentations", default=None)
            if resize is None:
                augmentations = build_detr_test_augmentations(**OFFICIAL_TEST_RESIZE)
            else:
                augmentations = instantiate(resize)
        self.model.eval()
        _load_detector_weights(self.model, weights)
        self.augmentations = T.AugmentationList(augmentations)

    def model_input(self, image: np.ndarray, name: str = "image") -> dict:
        """The model's input for one image: ``{"image": UInt8[3, H', W'] resized, "height": H, "width": W}``.

        Args:
            image: (H, W, 3) uint8 array in the predictor's ``image_format``.
            name: how errors call the image (e.g. its file name).
        Raises:
            ValueError: the image is not an H x W x 3 uint8 array, or the resize cannot handle its aspect
                ratio.
        """
        check_image_array(image, self.image_format, name)
        if self.image_format != self.model.input_format:
            image = image[:, :, ::-1]
        height, width = image.shape[:2]
        resized, _ = apply_augmentations(self.augmentations, np.ascontiguousarray(image), name)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        return {"image": tensor, "height": height, "width": width, "file_name": name}

    @torch.no_grad()
    def __call__(self, image: np.ndarray, name: str = "image") -> dict:
        """The model's output for one (H, W, 3) uint8 image: ``{"instances": Instances}`` in its pixels.

        ``name`` is how errors call the image (e.g. its file name).
        """
        return self.model([self.model_input(image, name)])[0]
