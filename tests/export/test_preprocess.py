"""``sparse_detr.export.preprocess``: Detectron2's test resize and channel order from an exported file's
metadata, and the boxes mapped back as ``detector_postprocess`` does."""

import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import Boxes, Instances

from sparse_detr.export import preprocess
from sparse_detr.export.metadata import DeploymentInfo, export_metadata, resized_shape


def _metadata(shortest_edge: int, max_size: int, input_format: str = "RGB") -> dict[str, str]:
    return {
        "sparse_detr.test_shortest_edge": str(shortest_edge),
        "sparse_detr.test_max_size": str(max_size),
        "sparse_detr.input_format": input_format,
    }


# (photo H, W, shortest edge, max size): landscape, portrait, capped by max size, square, odd sizes
SIZES = [
    (480, 640, 800, 1333), (1000, 200, 800, 1333), (333, 517, 256, 400), (97, 97, 96, 128), (71, 203, 96, 128)
]


@pytest.mark.parametrize("height, width, shortest_edge, max_size", SIZES)
def test_resize_equals_detectron2_test_resize(height, width, shortest_edge, max_size):
    photo = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    expected = T.ResizeShortestEdge(shortest_edge, max_size).get_transform(photo).apply_image(photo)
    assert resized_shape(height, width, shortest_edge, max_size) == expected.shape[:2]
    result = preprocess(photo, _metadata(shortest_edge, max_size))
    assert result.image.dtype == np.float32 and result.original_size == (height, width)
    np.testing.assert_array_equal(result.image, expected.transpose(2, 0, 1))
    bgr_model = preprocess(photo, _metadata(shortest_edge, max_size, "BGR"))  # RGB photo, BGR model
    np.testing.assert_array_equal(bgr_model.image, expected[:, :, ::-1].transpose(2, 0, 1))


def test_boxes_map_back_like_detector_postprocess():
    photo = np.zeros((480, 640, 3), np.uint8)
    result = preprocess(photo, _metadata(800, 1333))
    height, width = result.image.shape[1:]
    boxes = np.array([[10.5, 20.25, 300.0, 400.0], [0.0, 0.0, width, height]], np.float32)
    instances = Instances((height, width))
    instances.pred_boxes = Boxes(torch.from_numpy(boxes.copy()))
    expected = detector_postprocess(instances, 480, 640).pred_boxes.tensor.numpy()
    np.testing.assert_allclose(result.boxes_to_original(boxes), expected, rtol=1e-6, atol=1e-4)


def test_bad_inputs_are_refused_by_name():
    with pytest.raises(ValueError, match="test_shortest_edge"):
        preprocess(np.zeros((10, 10, 3), np.uint8), {"sparse_detr.input_format": "RGB"})
    with pytest.raises(ValueError, match="image"):
        preprocess(np.zeros((10, 10), np.uint8), _metadata(800, 1333))
    with pytest.raises(ValueError, match="max_size"):
        DeploymentInfo(shortest_edge=800, max_size=100)
    with pytest.raises(ValueError, match="category_ids"):
        DeploymentInfo(category_ids=[1, 1])


def test_metadata_names_the_labels_and_refuses_a_wrong_count():
    from tests.helpers.tiny_sparse_detr import NUM_CLASSES, build_tiny_model

    model = build_tiny_model().eval()
    names = [f"c{i}" for i in range(NUM_CLASSES)]
    info = DeploymentInfo(shortest_edge=96, max_size=128, class_names=names, category_ids=range(1, 6))
    metadata = export_metadata(model, info, default_keep_ratio=0.3, batched=False, deform_attn="grid_sample")
    assert metadata["sparse_detr.class_names"] == '["c0", "c1", "c2", "c3", "c4"]'
    assert metadata["sparse_detr.category_ids"] == "[1, 2, 3, 4, 5]"
    assert metadata["sparse_detr.default_keep_ratio"] == "0.3"
    assert metadata["sparse_detr.exporter_version"].startswith("sparse_detr ")
    with pytest.raises(ValueError, match="class_names: 2 entries for a model with 5 class logits"):
        export_metadata(
            model, DeploymentInfo(class_names=["a", "b"]), default_keep_ratio=None, batched=False,
            deform_attn="grid_sample",
        )
