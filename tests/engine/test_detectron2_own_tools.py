"""Detectron2's own DefaultPredictor, checkpointer and demo config path with the plugin: weights that leave
the class heads random are refused at inference, and the demo's --confidence-threshold is honoured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.data import MetadataCatalog
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model
from detectron2.utils.visualizer import Visualizer

from sparse_detr import add_sparse_detr_config, model_zoo
from sparse_detr.config.validation import validate_config
from sparse_detr.modeling.trained_heads import UntrainedModelError
from tests.helpers.tiny_sparse_detr import build_tiny_model, tiny_batch

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(ROOT / "configs/quickstart_shapes.py")


@pytest.fixture(scope="module")
def bgr_image():
    return np.random.default_rng(0).integers(0, 256, (72, 96, 3), dtype=np.uint8)


def test_default_predictor_refuses_weights_of_another_model(stand_in_weights, bgr_image):
    """A quickstart checkpoint with the R-50 yacs defaults: Detectron2 loads what fits, inference refuses."""
    cfg = add_sparse_detr_config(get_cfg())
    assert ("cuda" if torch.cuda.is_available() else "cpu") == cfg.MODEL.DEVICE
    cfg.MODEL.WEIGHTS = stand_in_weights(QUICKSTART)
    predictor = DefaultPredictor(cfg)  # Detectron2's: warnings, no error
    with pytest.raises(UntrainedModelError, match=r"quickstart_shapes0\.pth.*class-head tensor\(s\).*config"):
        predictor(bgr_image)


def test_detectron2_checkpointer_and_training_update_the_mark(tmp_path):
    """A checkpoint for another number of classes marks the heads; training (fine-tuning) clears the mark."""
    model = build_tiny_model()
    seven_classes = build_tiny_model()
    seven_classes.heads.num_classes = 7
    for index, head in enumerate(seven_classes.heads.class_heads):
        seven_classes.heads.class_heads[index] = torch.nn.Linear(head.in_features, 7)
    torch.save({"model": seven_classes.state_dict()}, tmp_path / "seven.pth")
    DetectionCheckpointer(model).load(str(tmp_path / "seven.pth"))  # Detectron2's: skips the class heads
    batch = tiny_batch(with_targets=False)
    with pytest.raises(UntrainedModelError, match="the weights loaded into it"):
        model.eval()(batch)
    model.train()(tiny_batch())  # a training step: the heads are being trained from here on
    assert len(model.eval()(batch)[0]["instances"]) > 0
    # weights that fit load the heads: inference goes on
    torch.save({"model": model.state_dict()}, tmp_path / "fits.pth")
    DetectionCheckpointer(seven_classes).load(str(tmp_path / "seven.pth"))
    fresh = build_tiny_model(seed=1)
    DetectionCheckpointer(fresh).load(str(tmp_path / "seven.pth"))
    DetectionCheckpointer(fresh).load(str(tmp_path / "fits.pth"))
    assert fresh.untrained_heads is None and len(fresh.eval()(batch)[0]["instances"]) > 0


@pytest.fixture(scope="module")
def quickstart_weights(tmp_path_factory):
    """A checkpoint of the quickstart architecture whose 100 detections spread over (0, 1): random weights,
    class heads drawn so that the scores do not saturate (the threshold's mechanics need no training)."""
    cfg = add_sparse_detr_config(get_cfg())
    cfg.merge_from_file(model_zoo.get_config_file("quickstart_shapes.yaml"))
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
    config_file = model_zoo.get_config_file("quickstart_shapes.yaml")
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
        model.score_threshold = float(scores.median())
        kept = model(batch)[0]["instances"]
    assert len(kept) == int((scores > model.score_threshold).sum()) and 0 < len(kept) < len(scores)
    cfg = model_zoo.get_config("quickstart_shapes")
    cfg.model.score_threshold = 1.5
    with pytest.raises(ValueError, match=r"model\.score_threshold=1\.5: must be a number in \[0, 1\]"):
        validate_config(cfg)
    yacs = add_sparse_detr_config(get_cfg())
    yacs.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 1.5
    yacs.MODEL.DEVICE = "meta"
    with pytest.raises(ValueError, match=r"SCORE_THRESH_TEST.*\[0, 1\], got 1\.5"):
        build_model(yacs)


@pytest.mark.slow
def test_detectron2_lazyconfig_train_net_eval_only_refuses_heads_it_did_not_load(tmp_path):
    """Detectron2's own tools/lazyconfig_train_net.py (from the installed wheel, unmodified), --eval-only with
    a checkpoint for another number of classes: Detectron2 loads the rest, the model refuses to predict."""
    import os
    import subprocess
    import sys

    import detectron2
    from detectron2.config import LazyConfig, instantiate

    tiny = str(ROOT / "tests/configs/tiny_shapes.py")
    cfg = LazyConfig.apply_overrides(LazyConfig.load(tiny), ["model.heads.num_classes=7"])
    torch.save({"model": instantiate(cfg.model).state_dict()}, tmp_path / "seven_classes.pth")
    script = Path(detectron2.__file__).parents[1] / "tools" / "lazyconfig_train_net.py"  # in the wheel
    command = [sys.executable, str(script), "--config-file", tiny, "--eval-only",
               f"train.init_checkpoint={tmp_path / 'seven_classes.pth'}", "train.device=cpu",
               f"train.output_dir={tmp_path / 'out'}"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DETECTRON2_DATASETS": str(tmp_path / "datasets")}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "UntrainedModelError: SparseDETR refuses to predict" in result.stderr, result.stderr[-3000:]
    assert "class-head tensor(s)" in result.stderr
