"""Detectron2's own DefaultPredictor and demo config path with the plugin: the demo's --confidence-threshold
is honoured; weights that leave the class heads random are refused by the project's predictor at load time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model
from detectron2.utils.visualizer import Visualizer

from sparse_detr import model_zoo
from sparse_detr.checkpoint.safe_loading import CheckpointMismatchError
from sparse_detr.config import add_sparse_detr_config
from sparse_detr.config.validation import validate_config
from sparse_detr.engine.predictor import Predictor, UntrainedModelError
from sparse_detr.model_zoo.model_zoo import find_config_file
from tests.helpers.tiny_sparse_detr import build_tiny_model, tiny_batch

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "configs/quickstart_shapes.py")


@pytest.fixture(scope="module")
def bgr_image():
    return np.random.default_rng(0).integers(0, 256, (72, 96, 3), dtype=np.uint8)


def test_weights_of_another_model_are_refused_at_load_time(stand_in_weights, bgr_image):
    """A quickstart checkpoint with the R-50 yacs defaults: the project's predictor refuses it when loading;
    Detectron2's own DefaultPredictor loads what fits (with warnings) and predicts, as for any model."""
    cfg = add_sparse_detr_config(get_cfg())
    assert ("cuda" if torch.cuda.is_available() else "cpu") == cfg.MODEL.DEVICE
    cfg.MODEL.WEIGHTS = stand_in_weights(QUICKSTART)
    with pytest.raises((UntrainedModelError, CheckpointMismatchError), match=r"quickstart_shapes0\.pth"):
        Predictor(cfg)
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST = 96, 128  # a small input for the R-50
    assert len(DefaultPredictor(cfg)(bgr_image)["instances"]) == 100


@pytest.fixture(scope="module")
def quickstart_weights(tmp_path_factory):
    """A checkpoint of the quickstart architecture whose 100 detections spread over (0, 1): random weights,
    class heads drawn so that the scores do not saturate (the threshold's mechanics need no training)."""
    cfg = add_sparse_detr_config(get_cfg())
    cfg.merge_from_file(find_config_file("quickstart_shapes.yaml"))
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():
        for head in model.heads.class_heads:
            head.weight.normal_(std=0.05)
            head.bias.uniform_(-4.0, 2.0)
    path = tmp_path_factory.mktemp("quickstart") / "model_final.pth"
    torch.save({"model": model.state_dict()}, path)
    return str(path)


def _demo_setup_cfg(config_file: str, opts: list[str], confidence_threshold: float):
    """Detectron2's demo/demo.py ``setup_cfg`` plus the one line a plugin user adds."""
    cfg = get_cfg()
    add_sparse_detr_config(cfg)  # the added line
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = confidence_threshold
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = confidence_threshold
    cfg.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH = confidence_threshold
    cfg.freeze()
    return cfg


def _visualization_demo_run_on_image(cfg, image):
    """What demo/predictor.py's ``VisualizationDemo.run_on_image`` does with a detection model."""
    metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else "__unused")
    predictions = DefaultPredictor(cfg)(image)
    visualizer = Visualizer(image[:, :, ::-1], metadata)
    drawn = visualizer.draw_instance_predictions(predictions=predictions["instances"].to("cpu"))
    return predictions, drawn, metadata


def test_detectron2_demo_confidence_threshold_draws_only_confident_boxes(quickstart_weights, bgr_image):
    config_file = find_config_file("quickstart_shapes.yaml")
    opts = ["MODEL.WEIGHTS", quickstart_weights]
    everything, _, _ = _visualization_demo_run_on_image(_demo_setup_cfg(config_file, opts, 0.0), bgr_image)
    scores = everything["instances"].scores
    assert len(scores) == 100
    threshold = float(scores.median())
    cfg = _demo_setup_cfg(config_file, opts, threshold)
    predictions, drawn, metadata = _visualization_demo_run_on_image(cfg, bgr_image)
    kept = predictions["instances"]
    assert 0 < len(kept) < 100 and bool((kept.scores > threshold).all())
    assert len(kept) == int((scores > threshold).sum())
    assert drawn.get_image().shape == bgr_image.shape
    assert metadata.thing_classes[:2] == ["circle", "square"]  # the demo labels boxes with class names


def test_lazy_config_score_threshold():
    model = build_tiny_model().eval()
    batch = tiny_batch(with_targets=False)
    with torch.no_grad():
        scores = model(batch)[0]["instances"].scores
        model.top_detections.score_threshold = float(scores.median())
        kept = model(batch)[0]["instances"]
    threshold = model.top_detections.score_threshold
    assert len(kept) == int((scores > threshold).sum()) and 0 < len(kept) < len(scores)
    cfg = model_zoo.get_config("quickstart_shapes")
    cfg.model.top_detections.score_threshold = 1.5
    message = r"model\.top_detections\.score_threshold=1\.5: must be a number in \[0, 1\]"
    with pytest.raises(ValueError, match=message):
        validate_config(cfg)
    yacs = add_sparse_detr_config(get_cfg())
    yacs.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 1.5
    yacs.MODEL.DEVICE = "meta"
    with pytest.raises(ValueError, match=r"SCORE_THRESH_TEST.*\[0, 1\], got 1\.5"):
        build_model(yacs)

