"""projects/SparseDETR/demo.py: images in, drawn detections out, unreadable inputs named and skipped."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from project_scripts import TINY_CONFIG, load_script

from sparse_detr.engine.apps import load_config_with_overrides

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


def test_demo_draws_readable_images_and_names_the_unreadable_one(inputs, tmp_path, capsys, caplog):
    output = tmp_path / "out"
    code = demo.main(
        [
            "--config-file",
            TINY_CONFIG,
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
    written = sorted(p.name for p in output.iterdir())
    assert written == ["first.png", "first_tokens.png", "second.png", "second_tokens.png"]
    with Image.open(output / "second.png") as drawn:
        assert drawn.size == (64, 80)  # drawn on the original image
    out = capsys.readouterr().out
    assert "skipped 1 unreadable input(s)" in out and "corrupt.jpg" in out
    assert "corrupt.jpg" in caplog.text


def test_demo_glob_without_tokens(inputs, tmp_path):
    output = tmp_path / "out"
    assert (
        demo.main(["--config-file", TINY_CONFIG, "--input", str(inputs / "f*.png"), "--output", str(output)])
        == 0
    )
    assert sorted(p.name for p in output.iterdir()) == ["first.png"]


def test_demo_rho_on_a_dense_model_fails_clearly(inputs, tmp_path):
    with pytest.raises(ValueError, match="no token scorer"):
        demo.main(
            [
                "--config-file",
                TINY_CONFIG,
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


def test_demo_runs_a_yacs_config_through_default_predictor(inputs, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(YACS_TINY)
    cfg = load_config_with_overrides(str(config), [], None, "cpu")
    runner = demo.Demo(cfg, confidence_threshold=0.0, rho=0.5, label="tiny")
    assert type(runner.predictor).__name__ == "DefaultPredictor"
    assert runner.model.token_scorer.active_keep_ratio == 0.5
    output = tmp_path / "out"
    assert (
        demo.main(
            ["--config-file", str(config), "--input", str(inputs / "second.jpg"), "--output", str(output)]
        )
        == 0
    )
    assert (output / "second.png").is_file()


def test_demo_video(tmp_path):
    cv2 = pytest.importorskip("cv2")
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 5, (96, 72))
    for frame in np.random.default_rng(2).integers(0, 256, (2, 72, 96, 3), dtype=np.uint8):
        writer.write(frame)
    writer.release()
    output = tmp_path / "out"
    assert (
        demo.main(["--config-file", TINY_CONFIG, "--video-input", str(video), "--output", str(output)]) == 0
    )
    drawn = cv2.VideoCapture(str(output / "clip.mp4"))
    assert drawn.get(cv2.CAP_PROP_FRAME_COUNT) == 2
    assert drawn.get(cv2.CAP_PROP_FRAME_WIDTH) == 96
    drawn.release()
