import numpy as np
import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog

from sparse_detr.data.synthetic import SHAPES_PRESETS, register_shapes_dataset
from sparse_detr.engine import AtomicDetectionCheckpointer
from sparse_detr.engine.predictor import LazyConfigPredictor
from sparse_detr.visualization import draw_prediction_grid


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    cfg = LazyConfig.load("tests/configs/tiny_shapes.py")
    torch.manual_seed(0)
    weights_dir = tmp_path_factory.mktemp("weights")
    AtomicDetectionCheckpointer(instantiate(cfg.model), str(weights_dir)).save("model_final")
    return LazyConfigPredictor(cfg, str(weights_dir / "model_final.pth"), device="cpu")


def test_predictions_are_in_original_image_coordinates(predictor):
    image = np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8)
    instances = predictor(image)["instances"]
    assert instances.image_size == (60, 90)
    assert len(instances) == predictor.model.max_detections
    boxes = instances.pred_boxes.tensor
    assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= 90).all() and (boxes[:, 1::2] <= 60).all()
    # the channel order of the input is honoured: BGR input of the flipped image gives the same result
    bgr = predictor(np.ascontiguousarray(image[:, :, ::-1]), image_format="BGR")["instances"]
    torch.testing.assert_close(bgr.scores, instances.scores)
    with pytest.raises(ValueError, match="H, W, 3"):
        predictor(image[:, :, 0])


def test_prediction_grid_tiles_the_dataset_images(predictor, tmp_path):
    name = "shapes_unit_test_grid"
    register_shapes_dataset(name, SHAPES_PRESETS["shapes_tiny_val"], str(tmp_path))
    try:
        grid = draw_prediction_grid(predictor, name, num_images=6, score_threshold=0.0, columns=4)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert grid.shape == (2 * 96, 4 * 96, 3) and grid.dtype == np.uint8
    assert (grid[96:, 2 * 96:] == 255).all()  # the two empty tiles of the second row stay white
