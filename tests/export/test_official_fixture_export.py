"""The converted official fixture (``../shared/reference``) exported to ONNX gives the official detections.

Image 0 of the fixture is the largest of its batch (no padding), so the official results for it are those of
one unpadded image; they are compared after clipping to the image, as Detectron2's ``detector_postprocess``.
"""

import numpy as np
import pytest
import torch

from sparse_detr.export import export_onnx

ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.slow

ATOL = 1e-4
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _pixels(image: torch.Tensor) -> torch.Tensor:
    """A fixture image (ImageNet-normalised) as raw RGB pixels, 0-255."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (image * std + mean) * 255


def _clipped_official(official: dict, height: int, width: int) -> dict:
    boxes = official["boxes"].clone()
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
    nonempty = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return {
        "boxes": boxes[nonempty],
        "scores": official["scores"][nonempty],
        "labels": official["labels"][nonempty],
    }


def test_exported_fixture_reproduces_official_detections(official, tmp_path):
    from sparse_detr.checkpoint import OfficialCheckpoint, build_converted_model

    model, _ = build_converted_model(OfficialCheckpoint(official["state_dict"], official["args"]))
    model.eval()
    image = official["inputs"]["images"][0]
    assert image.shape[1:] == official["inputs"]["padded_images"].shape[2:], "image 0 must be unpadded"
    path = export_onnx(model, tmp_path / "official.onnx", image_size=(192, 224))  # traced at another size
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    boxes, scores, classes = (
        torch.from_numpy(x)
        for x in session.run(
            None, {"image": _pixels(image).numpy(), "keep_ratio": np.array(0.1, dtype=np.float32)}
        )
    )
    # the official boxes are in pixels of the target size, an exact power-of-two multiple of the input size
    height, width = official["postprocess"]["target_sizes"][0].tolist()
    scale = torch.tensor([width / image.shape[2], height / image.shape[1]] * 2)
    reference = _clipped_official(official["postprocess"]["results"][0], height, width)
    assert len(scores) == len(reference["scores"])
    # neighbouring official scores can be ~1e-5 apart: match each official detection to ours by label and box
    matched = 0
    for box, score, label in zip(reference["boxes"], reference["scores"], reference["labels"]):
        candidates = (classes == label) & (
            (boxes * scale - box).abs().max(1).values <= ATOL * max(height, width)
        )
        candidates &= (scores - score).abs() <= ATOL
        matched += bool(candidates.any())
    assert matched >= len(reference["scores"]) - 2
    torch.testing.assert_close(scores, reference["scores"], rtol=0, atol=ATOL)
    same_order = torch.equal(classes, reference["labels"])
    box_diff = (boxes * scale - reference["boxes"]).abs().max().item() if same_order else float("nan")
    print(
        f"official fixture via ONNX Runtime: {matched}/{len(scores)} matched, max score diff "
        f"{(scores - reference['scores']).abs().max().item():.2g}, max box diff {box_diff:.2g} px"
    )
