"""Batched export: same-size images as one call (Float[B, 3, H, W]) give each image's single-image result."""

import numpy as np
import pytest
import torch

from sparse_detr.export import export_model, load_exported, read_metadata
from sparse_detr.export.deployable import DeployableSparseDETR
from tests.helpers.export_cases import (
    EXPORT_SIZE,
    RUN_SIZES,
    assert_same_detections,
    build_case,
    random_image,
    reference_detections,
)

ort = pytest.importorskip("onnxruntime")


def _per_image(outputs, index: int):
    """Image ``index``'s (boxes, scores, classes) of a batched graph's outputs (its nonempty boxes)."""
    boxes, scores, classes, nonempty = (np.asarray(x) for x in outputs)
    keep = nonempty[index]
    return boxes[index][keep], scores[index][keep], classes[index][keep]


@pytest.mark.parametrize("case", ["dense", "objectness"])
def test_eager_batch_equals_single_images(case):
    model = build_case(case)
    batched = DeployableSparseDETR(model, batched=True)
    images = torch.stack([random_image((75, 97), seed) for seed in range(3)])
    keep_ratio = None if case == "dense" else torch.tensor(0.3)
    with torch.no_grad():
        outputs = batched(images, keep_ratio)
    assert outputs[0].shape == (*outputs[1].shape, 4) and outputs[1].shape[0] == 3
    assert outputs[3].shape == outputs[1].shape and outputs[3].dtype == torch.bool
    for index, image in enumerate(images):
        reference = reference_detections(model, image, None if keep_ratio is None else 0.3)
        assert_same_detections(_per_image(outputs, index), reference, (75, 97))


@pytest.mark.slow
def test_onnx_batch_equals_single_images(tmp_path):
    model = build_case("dam")
    path = export_model(model, tmp_path / "batched.onnx", image_size=EXPORT_SIZE, batched=True)
    assert read_metadata(path)["sparse_detr.batched"] == "true"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    image_input = session.get_inputs()[0]
    assert image_input.name == "images" and image_input.shape == ["batch", 3, "height", "width"]
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "classes", "nonempty"]
    for batch, size in zip((3, 1), RUN_SIZES):
        images = torch.stack([random_image(size, seed) for seed in range(batch)])
        for keep_ratio in (0.1, 0.5):
            feed = {"images": images.numpy(), "keep_ratio": np.array(keep_ratio, np.float32)}
            outputs = session.run(None, feed)
            for index, image in enumerate(images):
                reference = reference_detections(model, image, keep_ratio)
                assert_same_detections(_per_image(outputs, index), reference, size)
    detector = load_exported(path)
    images = [random_image(RUN_SIZES[0], seed) for seed in range(2)]
    for image, outputs in zip(images, detector.run([x.numpy() for x in images], 0.5)):
        assert_same_detections(outputs, reference_detections(model, image, 0.5), RUN_SIZES[0])
    # a batch of two sizes would need padding, which changes the smaller image's detections: refused
    with pytest.raises(ValueError, match=r"images of 2 sizes .*run each size as its own batch"):
        detector.run([random_image(RUN_SIZES[0]).numpy(), random_image(RUN_SIZES[1]).numpy()])
