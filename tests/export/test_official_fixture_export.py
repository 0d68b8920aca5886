"""The converted official fixture (``../shared/reference``) exported to ONNX gives the official detections,
deformable attention as GridSample or as plugin nodes, in ONNX Runtime and OpenVINO (the runtime helpers).

Image 0 of the fixture is the largest of its batch (no padding), so the official results for it are those of
one unpadded image; they are compared after clipping to the image, as Detectron2's ``detector_postprocess``.
"""

import pytest
import torch

from sparse_detr.export import export_model, load_exported

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("openvino")
pytest.importorskip("onnxruntime_extensions")

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


@pytest.fixture(scope="module", params=["grid_sample", "plugin"])
def exported_fixture(request, official, tmp_path_factory):
    """(deform_attn, .onnx path) of the converted fixture, traced at another size than image 0's."""
    from sparse_detr.checkpoint.convert import OfficialCheckpoint, build_converted_model

    model, _ = build_converted_model(OfficialCheckpoint(official["state_dict"], official["args"]))
    model.eval()
    path = tmp_path_factory.mktemp("official") / f"official_{request.param}.onnx"
    return request.param, export_model(model, path, image_size=(192, 224), deform_attn=request.param)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_exported_fixture_reproduces_official_detections(official, exported_fixture, runtime):
    deform_attn, path = exported_fixture
    image = official["inputs"]["images"][0]
    assert image.shape[1:] == official["inputs"]["padded_images"].shape[2:], "image 0 must be unpadded"
    detector = load_exported(path, runtime, threads=2)
    assert detector.uses_plugin == (deform_attn == "plugin")
    boxes, scores, classes = (torch.from_numpy(x) for x in detector.run(_pixels(image).numpy(), 0.1))
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
        f"official fixture via {runtime} ({deform_attn}): {matched}/{len(scores)} matched, max score diff "
        f"{(scores - reference['scores']).abs().max().item():.2g}, max box diff {box_diff:.2g} px"
    )
