import numpy as np
import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog

from sparse_detr.data.synthetic import SHAPES_PRESETS, register_shapes_dataset
from sparse_detr.engine.predictor import Predictor, UntrainedModelError
from sparse_detr.visualization import draw_prediction_grid

TINY = "tests/configs/tiny_shapes.py"


@pytest.fixture(scope="module")
def predictor(stand_in_weights):
    return Predictor(LazyConfig.load(TINY), stand_in_weights(TINY), device="cpu")


def test_weights_that_leave_the_heads_untrained_are_refused(tmp_path, stand_in_weights):
    cfg = LazyConfig.load(TINY)
    with pytest.raises(UntrainedModelError, match="no weights given"):
        Predictor(cfg, "", device="cpu")
    with pytest.raises(UntrainedModelError, match="backbone only"):
        Predictor(cfg, "detectron2://ImageNetPretrained/torchvision/R-50.pkl", device="cpu")
    # a checkpoint of the same model for another number of classes: the class heads cannot be loaded
    cfg_seven = LazyConfig.apply_overrides(LazyConfig.load(TINY), ["model.heads.num_classes=7"])
    seven = tmp_path / "seven_classes.pth"
    torch.save({"model": instantiate(cfg_seven.model).state_dict()}, seven)
    with pytest.raises(UntrainedModelError, match="seven_classes.pth holds no weights for the model's class"):
        Predictor(cfg, str(seven), device="cpu")


def test_predictions_are_in_original_image_coordinates(predictor, stand_in_weights):
    image = np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8)
    rgb_predictor = Predictor(LazyConfig.load(TINY), stand_in_weights(TINY), device="cpu", image_format="RGB")
    instances = rgb_predictor(image)["instances"]
    assert instances.image_size == (60, 90)
    assert len(instances) == predictor.model.top_detections.max_detections
    boxes = instances.pred_boxes.tensor
    assert (boxes[:, 0::2] >= 0).all() and (boxes[:, 0::2] <= 90).all() and (boxes[:, 1::2] <= 60).all()
    # BGR by default, as Detectron2's DefaultPredictor: the flipped image gives the same result
    bgr = predictor(np.ascontiguousarray(image[:, :, ::-1]))["instances"]
    torch.testing.assert_close(bgr.scores, instances.scores)
    swapped = predictor(image)["instances"]  # the RGB array read as BGR: another image for the model
    assert not torch.equal(swapped.scores, instances.scores)
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        predictor(image[:, :, 0])


def test_a_model_zoo_name_and_a_yacs_config_build_the_same_predictor(tmp_path):
    """The three kinds of config: a name, its LazyConfig and its yacs twin (weights from MODEL.WEIGHTS)."""
    from sparse_detr import model_zoo

    lazy = model_zoo.get_config("quickstart_shapes")
    torch.manual_seed(0)
    model = instantiate(lazy.model)
    with torch.no_grad():
        for head in model.heads.class_heads:
            head.bias.uniform_(-4.0, 2.0)
    weights = tmp_path / "quickstart.pth"
    torch.save({"model": model.state_dict()}, weights)
    yacs = model_zoo.get_config("quickstart_shapes.yaml")
    yacs.MODEL.WEIGHTS = str(weights)
    image = np.random.default_rng(1).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    by_name = Predictor("quickstart_shapes", str(weights), device="cpu")(image)["instances"]
    by_yacs = Predictor(yacs, device="cpu")(image)["instances"]
    torch.testing.assert_close(by_yacs.scores, by_name.scores)
    torch.testing.assert_close(by_yacs.pred_boxes.tensor, by_name.pred_boxes.tensor)


def test_prediction_grid_tiles_the_dataset_images(predictor, tmp_path):
    name = "shapes_unit_test_grid"
    register_shapes_dataset(name, SHAPES_PRESETS["shapes_tiny_val"], str(tmp_path))
    try:
        grid = draw_prediction_grid(predictor, name, num_images=6, score_threshold=0.0, columns=4)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert grid.shape == (2 * 96, 4 * 96, 3) and grid.dtype == np.uint8
    assert (grid[96:, 2 * 96 :] == 255).all()  # the two empty tiles of the second row stay white


@pytest.mark.parametrize(
    "image, message",
    [
        (None, r"photo\.jpg: expected an H x W x 3 uint8.*got None"),
        (np.zeros((60, 90), np.uint8), r"grayscale"),
        (np.zeros((60, 90, 4), np.uint8), r"alpha"),
        (np.zeros((3, 60, 90), np.uint8), r"channels first"),
        (np.zeros((60, 90, 3), np.uint16), r"dtype uint16.*16-bit"),
        (np.zeros((60, 90, 3), np.float32), r"dtype float32.*float image"),
        (np.zeros((0, 90, 3), np.uint8), r"empty image"),
        ([[1, 2, 3]], r"got a list"),
    ],
)
def test_unfit_arrays_are_refused_with_what_is_expected(predictor, image, message):
    with pytest.raises(ValueError, match=message):
        predictor(image, name="photo.jpg")


def test_unknown_image_format_is_refused(stand_in_weights):
    with pytest.raises(ValueError, match=r"image_format.*'YUV'"):
        Predictor(LazyConfig.load(TINY), stand_in_weights(TINY), device="cpu", image_format="YUV")


def test_extreme_aspect_ratio_is_named(predictor):
    from sparse_detr.data.augmentations import ImageAugmentationError

    with pytest.raises(ImageAugmentationError, match=r"strip\.png.*2 x 600 pixels.*300:1"):
        predictor(np.zeros((2, 600, 3), np.uint8), name="strip.png")


def test_detectron2_default_predictor_inputs_are_checked_by_the_model():
    """Detectron2's DefaultPredictor casts to float before the model: the model's check catches the rest."""
    from detectron2.engine import DefaultPredictor

    from tests.helpers.tiny_sparse_detr import tiny_yacs_config

    predictor = DefaultPredictor(tiny_yacs_config())
    with pytest.raises(ValueError, match=r"got shape \(4, 64, 96\)"):
        predictor(np.zeros((60, 90, 4), np.uint8))
    with pytest.raises(ValueError, match=r"values in \[60000, 60000\]"):
        predictor(np.full((60, 90, 3), 60000, np.float32))  # a 16-bit image cast to float
