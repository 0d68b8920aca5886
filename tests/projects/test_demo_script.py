"""projects/SparseDETR/demo.py: images in, drawn detections out, unreadable inputs named and skipped,
one log line per input, untrained models refused."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from PIL import Image

from sparse_detr.engine.predictor import Predictor, UntrainedModelError
from sparse_detr.model_zoo.tool_configs import load_tool_config
from tests.helpers.project_scripts import TINY_CONFIG, load_script

demo = load_script("demo")


@pytest.fixture
def inputs(tmp_path):
    folder = tmp_path / "inputs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (72, 96, 3), dtype=np.uint8)).save(folder / "first.png")
    Image.fromarray(rng.integers(0, 256, (80, 64, 3), dtype=np.uint8)).save(folder / "second.jpg")
    (folder / "corrupt.jpg").write_bytes(b"this is not a JPEG")
    return folder


def test_demo_draws_readable_images_and_names_the_unreadable_one(inputs, tmp_path, capsys, stand_in_weights):
    output = tmp_path / "out"
    code = demo.main(
        [
            "--config-file",
            TINY_CONFIG,
            "--weights",
            stand_in_weights(TINY_CONFIG),
            "--input",
            str(inputs),
            "--output",
            str(output),
            "--confidence-threshold",
            "0.0",
            "--rho",
            "0.5",
            "--show-tokens",
        ]
    )
    assert code == 0
    written = sorted(p.name for p in output.glob("*.png"))
    assert written == ["first.png", "first_tokens.png", "second.png", "second_tokens.png"]
    with Image.open(output / "second.png") as drawn:
        assert drawn.size == (64, 80)  # drawn on the original image
    out = capsys.readouterr().out
    assert "skipped 1 unreadable or unusable input(s)" in out and "corrupt.jpg" in out
    # the project's log, on the console and in OUTPUT/log.txt: one line per input with its detection count
    log = (output / "log.txt").read_text()
    assert "corrupt.jpg" in log
    line = r"sparse_detr\.demo INFO: \S+/(first\.png|second\.jpg): (\d+) detection\(s\) with score >= 0\.0"
    counts = dict(re.findall(line, log))
    assert sorted(counts) == ["first.png", "second.jpg"]
    # at threshold 0 every detection the model returns counts
    max_detections = load_tool_config(TINY_CONFIG, [], None, "cpu").model.top_detections.max_detections
    assert {int(count) for count in counts.values()} == {max_detections}


def test_demo_glob_without_tokens(inputs, tmp_path, stand_in_weights):
    output = tmp_path / "out"
    weights = stand_in_weights(TINY_CONFIG)
    arguments = ["--config-file", TINY_CONFIG, "--weights", weights, "--input", str(inputs / "f*.png")]
    assert demo.main([*arguments, "--output", str(output)]) == 0
    assert sorted(p.name for p in output.glob("*.png")) == ["first.png"]


def test_demo_refuses_a_model_without_trained_heads(inputs, tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the demo tried to download weights")

    monkeypatch.setattr("urllib.request.urlopen", no_network)
    arguments = ["--input", str(inputs), "--output", str(tmp_path / "o")]
    with pytest.raises(UntrainedModelError, match=r"no weights given.*sparse_detr://official/"):
        demo.main(["--config-file", TINY_CONFIG, *arguments])
    # a model-zoo config whose only weights are the ImageNet backbone: refused before any download
    with pytest.raises(UntrainedModelError, match=r"ImageNetPretrained.*backbone only"):
        demo.main(["--config-file", "sparse_detr_r50_rho0.1_50ep", *arguments])


def test_demo_refuses_a_checkpoint_without_class_heads(inputs, tmp_path, stand_in_weights):
    trained = torch.load(stand_in_weights(TINY_CONFIG), weights_only=True)["model"]
    backbone_only = tmp_path / "backbone.pth"
    torch.save({"model": {k: v for k, v in trained.items() if k.startswith("backbone.")}}, backbone_only)
    arguments = ["--input", str(inputs), "--output", str(tmp_path / "o"), "--weights", str(backbone_only)]
    with pytest.raises(UntrainedModelError, match=r"backbone\.pth holds no weights for the model's class"):
        demo.main(["--config-file", TINY_CONFIG, *arguments])


def test_demo_rho_on_a_dense_model_fails_clearly(inputs, tmp_path, stand_in_weights):
    dense = ("model.token_scorer=null", "model.heads.encoder_aux=False")
    with pytest.raises(ValueError, match="no token scorer"):
        demo.main(
            [
                "--config-file",
                TINY_CONFIG,
                "--weights",
                stand_in_weights(TINY_CONFIG, dense),
                "--input",
                str(inputs),
                "--output",
                str(tmp_path / "o"),
                "--rho",
                "0.5",
                "model.token_scorer=null",
                "model.heads.encoder_aux=False",
            ]
        )


YACS_TINY = """\
MODEL:
  WEIGHTS: ""
  RESNETS: {DEPTH: 18, RES2_OUT_CHANNELS: 64}
  SPARSE_DETR: {HIDDEN_DIM: 32, NUM_HEADS: 4, DIM_FEEDFORWARD: 64, ENC_LAYERS: 1, DEC_LAYERS: 1,
                NUM_QUERIES: 10, NUM_CLASSES: 5, KEEP_RATIO: 0.3}
INPUT: {MIN_SIZE_TEST: 64, MAX_SIZE_TEST: 96}
"""


def test_demo_runs_a_yacs_config_through_the_predictor(inputs, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(YACS_TINY)
    cfg = load_tool_config(str(config), [], None, "cpu")
    with pytest.raises(UntrainedModelError, match="no weights given"):
        demo.Demo(cfg, confidence_threshold=0.0, rho=0.5, label="tiny")
    model = build_model(cfg)
    with torch.no_grad():  # a stand-in for trained class heads
        for head in model.heads.class_heads:
            head.bias.add_(1.0)
    weights = tmp_path / "tiny_yacs.pth"
    torch.save({"model": model.state_dict()}, weights)
    cfg.MODEL.WEIGHTS = str(weights)
    runner = demo.Demo(cfg, confidence_threshold=0.0, rho=0.5, label="tiny")
    assert isinstance(runner.predictor, Predictor)  # the project's, loading strictly
    assert runner.model.token_scorer.keep_ratio == 0.5
    output = tmp_path / "out"
    assert (
        demo.main(
            ["--config-file", str(config), "--weights", str(weights), "--input", str(inputs / "second.jpg"),
             "--output", str(output)]
        )
        == 0
    )
    assert (output / "second.png").is_file()


def test_demo_video(tmp_path, stand_in_weights):
    cv2 = pytest.importorskip("cv2")
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (96, 72))
    for frame in np.random.default_rng(2).integers(0, 256, (2, 72, 96, 3), dtype=np.uint8):
        writer.write(frame)
    writer.release()
    output = tmp_path / "out"
    assert (
        demo.main(["--config-file", TINY_CONFIG, "--weights", stand_in_weights(TINY_CONFIG),
                   "--video-input", str(video), "--output", str(output)]) == 0
    )
    assert re.search(r"clip\.mp4: \d+ detection\(s\) with score >= 0\.5 in 2 frame\(s\)",
                     (output / "log.txt").read_text())
    drawn = cv2.VideoCapture(str(output / "clip.mp4"))
    assert drawn.get(cv2.CAP_PROP_FRAME_COUNT) == 2
    assert drawn.get(cv2.CAP_PROP_FRAME_WIDTH) == 96
    drawn.release()


def test_demo_outputs_are_unique_and_an_unusable_image_does_not_stop_it(tmp_path, capsys, stand_in_weights):
    rng = np.random.default_rng(3)
    inputs = tmp_path / "in"
    for relative in ("a/photo.jpg", "a/photo.png", "b/photo.png"):
        (inputs / relative).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(inputs / relative)
    # resized to 0 rows by the test resize
    Image.fromarray(np.zeros((2, 900, 3), dtype=np.uint8)).save(inputs / "a" / "strip.png")
    output = tmp_path / "out"
    files = [str(inputs / r) for r in ("a/photo.jpg", "a/strip.png", "a/photo.png", "b/photo.png")]
    weights = stand_in_weights(TINY_CONFIG)
    arguments = ["--config-file", TINY_CONFIG, "--weights", weights, "--input", *files]
    assert demo.main([*arguments, "--output", str(output)]) == 0
    written = sorted(str(p.relative_to(output)) for p in output.rglob("*.png"))
    assert written == ["a/photo_jpg.png", "a/photo_png.png", "b/photo.png"]
    out = capsys.readouterr().out
    assert "wrote 3 file(s)" in out and "strip.png" in out
    log = (output / "log.txt").read_text()
    assert "strip.png" in log and "aspect ratio" in log


def test_demo_refuses_weights_that_run_code(inputs, tmp_path):
    import pickle

    from sparse_detr.utils.safe_pickle import UnsafeCheckpointError

    class RunsCode:
        def __reduce__(self):
            return (open, (str(tmp_path / "code_ran"), "w"))

    weights = tmp_path / "weights.pkl"
    weights.write_bytes(pickle.dumps({"model": {"x": RunsCode()}, "__author__": "x"}))
    with pytest.raises(UnsafeCheckpointError, match=r"weights\.pkl"):
        demo.main(
            [
                "--config-file",
                TINY_CONFIG,
                "--weights",
                str(weights),
                "--input",
                str(inputs),
                "--output",
                str(tmp_path / "out"),
            ]
        )
    assert not (tmp_path / "code_ran").exists()


def test_demo_option_after_overrides_is_refused(inputs, tmp_path):
    with pytest.raises(ValueError, match=r"Option '--input' comes after the config overrides.*demo\.py"):
        demo.main(
            ["--config-file", TINY_CONFIG, "--output", str(tmp_path), "train.seed=1", "--input", str(inputs)]
        )


def test_demo_refuses_to_draw_over_an_input_image(inputs, stand_in_weights):
    from sparse_detr.utils.files import OverwritesInputError

    before = (inputs / "first.png").read_bytes()
    arguments = ["--config-file", TINY_CONFIG, "--weights", stand_in_weights(TINY_CONFIG),
                 "--input", str(inputs / "first.png"), "--output", str(inputs)]
    with pytest.raises(OverwritesInputError, match=r"--output's first\.png .*first\.png is the file --input"):
        demo.main(arguments)
    assert (inputs / "first.png").read_bytes() == before
