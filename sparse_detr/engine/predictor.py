"""Inference on single images with a LazyConfig model (the LazyConfig counterpart of ``DefaultPredictor``).

Predictors refuse a model whose detection heads were never trained (:func:`refuse_untrained_heads`): drawing
detections from random class heads gives an empty or meaningless picture and no error.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import instantiate
from detectron2.data import transforms as T

__all__ = ["LazyConfigPredictor", "UntrainedModelError", "refuse_missing_weights", "refuse_untrained_heads"]

# weights that initialise the backbone only (training starting points, not detectors)
BACKBONE_INITIALISATIONS = ("detectron2://ImageNetPretrained/",)
HOW_TO_GET_WEIGHTS = (
    "Give trained weights: an official COCO model by name (sparse_detr://official/sparse_detr_r50_10, "
    "..._swint_10, ..._r50_scrl_10, rho 10..50 %; downloaded once), a checkpoint converted with "
    "projects/SparseDETR/convert_official.py, or a model_final.pth written by train_net.py"
)


class UntrainedModelError(ValueError):
    """The weights given to a predictor leave the model's detection heads untrained."""


def _class_head_parameters(model: torch.nn.Module) -> list[torch.Tensor]:
    params = [p for name, p in model.named_parameters() if "class_head" in name]
    return params or [p for name, p in model.named_parameters() if not name.startswith("backbone.")]


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


@contextlib.contextmanager
def refuse_untrained_heads(model: torch.nn.Module, weights: str) -> Iterator[None]:
    """Wrap the loading of ``weights`` into ``model``; refuse weights that cannot make it a detector.

    Before loading: :func:`refuse_missing_weights`. After loading: every class-head parameter still at its
    initial value, i.e. the checkpoint held no class heads (a backbone checkpoint, or heads skipped for a
    shape mismatch).

        with refuse_untrained_heads(model, weights):
            DetectionCheckpointer(model).load(weights)
    """
    refuse_missing_weights(weights)
    before = [p.detach().clone() for p in _class_head_parameters(model)]
    yield
    if all(torch.equal(a, b) for a, b in zip(before, _class_head_parameters(model))):
        raise UntrainedModelError(
            f"{weights} holds no weights for the model's class heads (a backbone-only checkpoint, or one "
            "trained for another number of classes): its detections would be meaningless. "
            f"{HOW_TO_GET_WEIGHTS}"
        )


class LazyConfigPredictor:
    """Builds ``cfg.model``, loads ``weights`` and predicts on one image at a time.

    The image is resized with the test augmentations of ``cfg.dataloader.test.mapper`` and converted to the
    model's ``input_format``; predictions come back in the original image's pixel coordinates. Weights that
    leave the detection heads untrained are refused (:class:`UntrainedModelError`).
    """

    def __init__(self, cfg, weights: str, device: str | None = None):
        refuse_missing_weights(weights)  # before the model is built
        self.model = instantiate(cfg.model)
        self.model.to(device or cfg.train.device).eval()
        with refuse_untrained_heads(self.model, weights):
            DetectionCheckpointer(self.model).load(weights)
        self.augmentations = T.AugmentationList(instantiate(cfg.dataloader.test.mapper.augmentations))
        self.input_format = self.model.input_format

    @torch.no_grad()
    def __call__(self, image: np.ndarray, image_format: str = "RGB") -> dict:
        """
        Args:
            image: (H, W, 3) uint8 array in ``image_format`` channel order ("RGB" or "BGR").
        Returns:
            the model's output for the image: ``{"instances": Instances}`` (boxes in input pixels).
        """
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be (H, W, 3), got {image.shape}")
        if image_format != self.input_format:
            image = image[:, :, ::-1]
        height, width = image.shape[:2]
        aug_input = T.AugInput(np.ascontiguousarray(image))
        self.augmentations(aug_input)
        tensor = torch.as_tensor(np.ascontiguousarray(aug_input.image.transpose(2, 0, 1)))
        return self.model([{"image": tensor, "height": height, "width": width}])[0]
