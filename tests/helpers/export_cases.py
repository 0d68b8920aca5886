"""Tiny models to export and the parity check of an exported detector against the Detectron2 model."""

from __future__ import annotations

import numpy as np
import torch

from tests.helpers.tiny_sparse_detr import build_tiny_model

EXPORT_SIZE = (96, 128)  # (H, W) of the example image the graphs are traced with
RUN_SIZES = ((80, 72), (130, 164))  # other sizes the exported graphs must handle
# name -> (build_tiny_model kwargs, run-time keep ratios to check; None = dense)
CASES = {
    "dense": (dict(scorer=None, enc_layers=1, dec_layers=1), (None,)),
    "dam": (dict(scorer="dam", keep_ratio=0.1), (0.1, 0.5)),
    "objectness": (dict(scorer="objectness", keep_ratio=0.3, enc_layers=1, dec_layers=1), (0.3,)),
}


def build_case(name: str):
    kwargs, _ = CASES[name]
    return build_tiny_model(seed=3, **kwargs).eval()


def random_image(size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """Float[3, H, W] 0-255."""
    return torch.rand(3, *size, generator=torch.Generator().manual_seed(seed)) * 255


def reference_detections(model, image: torch.Tensor, keep_ratio: float | None) -> dict[str, torch.Tensor]:
    """The Detectron2 model's Instances for ``image`` (at inference rho ``keep_ratio``) as tensors."""
    if keep_ratio is not None:
        model.set_keep_ratio(keep_ratio)
    with torch.no_grad():
        instances = model([{"image": image}])[0]["instances"]
    return {
        "boxes": instances.pred_boxes.tensor,
        "scores": instances.scores,
        "classes": instances.pred_classes,
    }


def assert_same_detections(outputs, reference: dict, image_size: tuple[int, int]) -> dict[str, float]:
    """(boxes, scores, classes) from a runtime equal the reference: same classes, 1e-4 relative values.

    Returns the max absolute differences (boxes in pixels, scores).
    """
    boxes, scores, classes = (torch.as_tensor(np.asarray(x)) for x in outputs)
    assert boxes.shape == reference["boxes"].shape, (tuple(boxes.shape), tuple(reference["boxes"].shape))
    assert classes.dtype == torch.int64 and boxes.dtype == scores.dtype == torch.float32
    assert torch.equal(classes, reference["classes"])
    torch.testing.assert_close(scores, reference["scores"], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(boxes, reference["boxes"], rtol=1e-4, atol=1e-4 * max(image_size))
    return {
        "boxes": (boxes - reference["boxes"]).abs().max().item() if len(boxes) else 0.0,
        "scores": (scores - reference["scores"]).abs().max().item() if len(scores) else 0.0,
    }
