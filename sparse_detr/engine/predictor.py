"""Inference on single images with a LazyConfig model (the LazyConfig counterpart of ``DefaultPredictor``)."""
from __future__ import annotations

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import instantiate
from detectron2.data import transforms as T

__all__ = ["LazyConfigPredictor"]


class LazyConfigPredictor:
    """Builds ``cfg.model``, loads ``weights`` and predicts on one image at a time.

    The image is resized with the test augmentations of ``cfg.dataloader.test.mapper`` and converted to the
    model's ``input_format``; predictions come back in the original image's pixel coordinates.
    """

    def __init__(self, cfg, weights: str, device: str | None = None):
        self.model = instantiate(cfg.model)
        self.model.to(device or cfg.train.device).eval()
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
