"""Inference on single images: a LazyConfig predictor and a strict-loading ``DefaultPredictor``.

Both load their weights through :func:`load_detector_weights`: no code runs from a ``.pkl``, a checkpoint that
does not fit the model is refused with its keys named, and weights that leave the detection heads untrained
(none, a backbone initialisation, another number of classes) are refused with how to get trained ones:
random class heads draw an empty or meaningless picture without any error.
"""
from __future__ import annotations

import numpy as np
import torch
from detectron2.config import instantiate
from detectron2.data import transforms as T
from detectron2.engine import DefaultPredictor

from ..data.augmentations import ImageAugmentationError, apply_augmentations
from ..modeling.trained_heads import HOW_TO_GET_WEIGHTS, UntrainedModelError
from ..utils.input_checks import check_image_array, check_input_format
from .checkpoint import CheckpointMismatchError, load_weights

__all__ = [
    "LazyConfigPredictor",
    "StrictDefaultPredictor",
    "UntrainedModelError",
    "load_detector_weights",
    "refuse_missing_weights",
]

# weights that initialise the backbone only (training starting points, not detectors)
BACKBONE_INITIALISATIONS = ("detectron2://ImageNetPretrained/",)


def refuse_missing_weights(weights: str) -> None:
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


def load_detector_weights(model: torch.nn.Module, weights: str) -> None:
    """Load ``weights`` into ``model`` strictly, refusing weights that cannot make it a detector.

    Raises:
        UntrainedModelError: no weights, a backbone initialisation, or a checkpoint without (fitting) class
            heads (a backbone-only checkpoint, or one trained for another number of classes).
        CheckpointMismatchError: any other key or shape that does not fit the model, or layer stacks of
            other depths than the model's (a checkpoint of another architecture than the config's).
    """
    refuse_missing_weights(weights)
    try:
        load_weights(model, weights, strict=True)
    except CheckpointMismatchError as error:
        if error.architecture:  # other layer counts: the config is at fault, not missing class heads
            raise
        incompatible = error.incompatible
        unfit = set(incompatible.missing_keys) | {key for key, _, _ in incompatible.incorrect_shapes}
        if any(".class_heads." in f".{key}" for key in unfit):
            raise UntrainedModelError(
                f"{weights} holds no weights for the model's class heads (a backbone-only checkpoint, or one "
                f"trained for another number of classes): its detections would be meaningless. ({error}) "
                f"{HOW_TO_GET_WEIGHTS}"
            ) from error
        raise


class LazyConfigPredictor:
    """Builds ``cfg.model``, loads ``weights`` (strictly) and predicts on one image at a time.

    The image (BGR by default, as for Detectron2's ``DefaultPredictor``) is resized with the test
    augmentations of ``cfg.dataloader.test.mapper`` and converted to the model's ``input_format``;
    predictions come back in the original image's pixel coordinates. Weights that
    leave the detection heads untrained are refused (:class:`UntrainedModelError`).
    """

    def __init__(self, cfg, weights: str, device: str | None = None):
        refuse_missing_weights(weights)  # before the model is built
        self.model = instantiate(cfg.model)
        self.model.to(device or cfg.train.device).eval()
        load_detector_weights(self.model, weights)
        self.augmentations = T.AugmentationList(instantiate(cfg.dataloader.test.mapper.augmentations))
        self.input_format = self.model.input_format

    @torch.no_grad()
    def __call__(self, image: np.ndarray, image_format: str = "BGR", name: str = "image") -> dict:
        """
        Args:
            image: (H, W, 3) uint8 array in ``image_format`` channel order: "BGR" by default, as
                Detectron2's ``DefaultPredictor`` (what ``cv2.imread`` and ``read_image(path, format="BGR")``
                give), or "RGB" (e.g. ``np.asarray(PIL.Image.open(path).convert("RGB"))``).
            name: how errors call the image (e.g. its file name).
        Returns:
            the model's output for the image: ``{"instances": Instances}`` (boxes in input pixels).
        Raises:
            ValueError: the image is not an H x W x 3 uint8 array, ``image_format`` is unknown, or the
                resize cannot handle its aspect ratio.
        """
        check_input_format(image_format, "image_format")
        check_image_array(image, image_format, name)
        if image_format != self.input_format:
            image = image[:, :, ::-1]
        height, width = image.shape[:2]
        resized, _ = apply_augmentations(self.augmentations, np.ascontiguousarray(image), name)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)))
        return self.model([{"image": tensor, "height": height, "width": width, "file_name": name}])[0]


class StrictDefaultPredictor(DefaultPredictor):
    """Detectron2's ``DefaultPredictor`` for yacs configs, loading ``cfg.MODEL.WEIGHTS`` safely and strictly.

    Detectron2's own predictor unpickles ``.pkl`` weights with plain ``pickle`` and accepts checkpoints of
    another architecture with warnings. Images are BGR/RGB uint8 (H, W, 3) as for ``DefaultPredictor``; what
    still reaches the model unfit (see :func:`sparse_detr.utils.input_checks.check_model_inputs`) is
    refused there.
    """

    def __init__(self, cfg):
        weights = cfg.MODEL.WEIGHTS
        cfg = cfg.clone()
        cfg.defrost()
        cfg.MODEL.WEIGHTS = ""  # loaded below, not by Detectron2's checkpointer
        refuse_missing_weights(weights)  # before the model is built
        super().__init__(cfg)
        load_detector_weights(self.model, weights)

    def __call__(self, original_image: np.ndarray, name: str = "image") -> dict:
        check_image_array(original_image, self.input_format, name)
        resize = self.aug.get_transform(original_image)
        height, width = original_image.shape[:2]
        new_size = (getattr(resize, "new_h", height), getattr(resize, "new_w", width))
        if 0 in new_size:
            raise ImageAugmentationError(
                f"Image {name} ({height} x {width} pixels) would be resized to "
                f"{new_size[0]} x {new_size[1]}: "
                "its aspect ratio is too extreme for the resize"
            )
        if hasattr(self.model, "check_image_size"):  # too small after the resize: named here
            self.model.check_image_size(*new_size, name)
        return super().__call__(original_image)
