"""projects/SparseDETR/export.py: LazyConfig and yacs configs, weights, formats, refusals by name."""

import json

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import MetadataCatalog
from project_scripts import TINY_CONFIG, load_script

from sparse_detr.model_zoo import build_model_from_config, load_config

export_script = load_script("export")


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """(model, checkpoint path) of the tiny shapes config with random weights."""
    torch.manual_seed(5)
    model = build_model_from_config(load_config(TINY_CONFIG), "cpu")
    directory = tmp_path_factory.mktemp("weights")
    DetectionCheckpointer(model, save_dir=str(directory)).save("tiny")
    return model, directory / "tiny.pth"


@pytest.mark.slow
def test_onnx_export_of_a_lazy_config_runs_in_onnxruntime(tiny_weights, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    model, weights = tiny_weights
    output = tmp_path / "tiny.onnx"
    argv = [
        "--config-file",
        TINY_CONFIG,
        "--weights",
        str(weights),
        "--format",
        "onnx",
        "--output",
        str(output),
    ]
    assert export_script.main([*argv, "--rho", "0.2", "--image-size", "96", "128"]) == 0
    assert f"wrote {output}" in capsys.readouterr().out
    session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    metadata = session.get_modelmeta().custom_metadata_map
    assert float(metadata["sparse_detr.default_keep_ratio"]) == pytest.approx(0.2)
    # the config's test resize and test set labels
    resize = (metadata["sparse_detr.test_shortest_edge"], metadata["sparse_detr.test_max_size"])
    assert resize == ("96", "128")
    shapes = MetadataCatalog.get("shapes_tiny_val")
    assert json.loads(metadata["sparse_detr.class_names"]) == list(shapes.thing_classes)
    ids = sorted(shapes.thing_dataset_id_to_contiguous_id, key=shapes.thing_dataset_id_to_contiguous_id.get)
    assert json.loads(metadata["sparse_detr.category_ids"]) == ids
    image = torch.rand(3, 100, 120, generator=torch.Generator().manual_seed(0)) * 255
    boxes, scores, classes = session.run(
        None, {"image": image.numpy(), "keep_ratio": np.array(0.2, np.float32)}
    )
    model.token_scorer.test_keep_ratio = 0.2
    with torch.no_grad():
        instances = model([{"image": image}])[0]["instances"]
    np.testing.assert_array_equal(classes, instances.pred_classes.numpy())
    np.testing.assert_allclose(scores, instances.scores.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(boxes, instances.pred_boxes.tensor.numpy(), rtol=1e-4, atol=1e-2)


def test_lazy_config_overrides_reach_the_refusal(tiny_weights, tmp_path, capsys):
    _, weights = tiny_weights
    argv = ["--config-file", TINY_CONFIG, "--weights", str(weights), "--output", str(tmp_path / "x.onnx")]
    assert export_script.main([*argv, "model.size_divisibility=32"]) == 2
    assert "SIZE_DIVISIBILITY" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_yacs_config_is_accepted_and_refusals_name_the_setting(tmp_path, capsys):
    config = tmp_path / "yacs.yaml"
    config.write_text("MODEL:\n  META_ARCHITECTURE: SparseDETR\n  SPARSE_DETR:\n    TOKEN_SCORER: random\n")
    argv = ["--config-file", str(config), "--format", "torch-export", "--output", str(tmp_path / "m.pt2")]
    assert export_script.main(argv) == 2
    assert "TOKEN_SCORER" in capsys.readouterr().err


def test_rho_on_a_dense_model_is_refused(tmp_path, capsys):
    config = tmp_path / "dense.yaml"
    config.write_text("MODEL:\n  META_ARCHITECTURE: SparseDETR\n  SPARSE_DETR:\n    TOKEN_SCORER: ''\n")
    argv = ["--config-file", str(config), "--output", str(tmp_path / "m.onnx"), "--rho", "0.3"]
    assert export_script.main(argv) == 2
    assert "TOKEN_SCORER" in capsys.readouterr().err


def test_deform_attn_form_must_fit_the_format(tiny_weights, tmp_path, capsys):
    _, weights = tiny_weights
    argv = ["--config-file", TINY_CONFIG, "--weights", str(weights)]
    onnx_argv = [*argv, "--format", "onnx", "--output", str(tmp_path / "m.onnx")]
    assert export_script.main([*onnx_argv, "--deform-attn", "extension"]) == 2
    assert "('grid_sample', 'plugin')" in capsys.readouterr().err
    program_argv = [*argv, "--format", "torch-export", "--output", str(tmp_path / "m.pt2")]
    assert export_script.main([*program_argv, "--deform-attn", "plugin"]) == 2
    assert "deform_attn" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
