"""projects/SparseDETR/export.py: LazyConfig and yacs configs, weights, formats, refusals by name."""

import json
import re

import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import MetadataCatalog

from sparse_detr.model_zoo.model_zoo import build_model_from_config
from sparse_detr.model_zoo.tool_configs import load_tool_config
from tests.helpers.project_scripts import TINY_CONFIG, load_script

export_script = load_script("export")


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """(model, checkpoint path) of the tiny shapes config with random weights."""
    torch.manual_seed(5)
    model = build_model_from_config(load_tool_config(TINY_CONFIG), "cpu")
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
    model.set_keep_ratio(0.2)
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


def _tiny_yacs(tmp_path, token_scorer: str) -> list[str]:
    """``--config-file X --weights Y`` of the tests' tiny yacs model with that scorer (weights saved)."""
    from detectron2.modeling import build_model

    from tests.helpers.tiny_sparse_detr import tiny_yacs_config

    cfg = tiny_yacs_config()
    cfg.MODEL.SPARSE_DETR.TOKEN_SCORER = token_scorer
    cfg.MODEL.SPARSE_DETR.ENCODER_AUX_LOSS = bool(token_scorer)
    (tmp_path / "yacs.yaml").write_text(cfg.dump())
    torch.save({"model": build_model(cfg).state_dict()}, tmp_path / "yacs.pth")
    return ["--config-file", str(tmp_path / "yacs.yaml"), "--weights", str(tmp_path / "yacs.pth")]


def test_yacs_config_is_accepted_and_refusals_name_the_setting(tmp_path, capsys):
    argv = [*_tiny_yacs(tmp_path, "random"), "--format", "torch-export", "--output", str(tmp_path / "m.pt2")]
    assert export_script.main(argv) == 2
    assert "TOKEN_SCORER" in capsys.readouterr().err


def test_rho_on_a_dense_model_is_refused(tmp_path, capsys):
    argv = [*_tiny_yacs(tmp_path, ""), "--output", str(tmp_path / "m.onnx"), "--rho", "0.3"]
    assert export_script.main(argv) == 2
    assert "TOKEN_SCORER" in capsys.readouterr().err


@pytest.mark.parametrize(
    "weights, message",
    [
        (None, r"no weights given.*sparse_detr://official/"),  # the R-50 config names the ImageNet R-50
        ("detectron2://ImageNetPretrained/torchvision/R-50.pkl", r"initialises the backbone only"),
    ],
)
def test_weights_are_checked_as_the_predictors_do(tmp_path, capsys, weights, message):
    """Without trained weights nothing is downloaded and nothing is exported."""
    output = tmp_path / "m.onnx"
    argv = ["--config-file", "sparse_detr_r50_rho0.1_50ep", "--output", str(output)]
    if weights is not None:
        argv += ["--weights", weights]
    else:
        argv += ["train.init_checkpoint="]
    assert export_script.main(argv) == 2
    assert re.search(message, capsys.readouterr().err) and not output.exists()


def test_weights_of_another_model_are_refused(tiny_weights, tmp_path, capsys):
    _, weights = tiny_weights
    argv = ["--config-file", TINY_CONFIG, "--weights", str(weights), "--output", str(tmp_path / "m.onnx")]
    assert export_script.main([*argv, "model.heads.num_classes=7"]) == 2
    assert "holds no weights for the model's class heads" in capsys.readouterr().err


def test_export_says_what_it_does_and_how_long_it_took(tiny_weights, tmp_path, capsys):
    _, weights = tiny_weights
    output = tmp_path / "m.pt2"
    argv = ["--config-file", TINY_CONFIG, "--weights", str(weights), "--format", "torch-export",
            "--output", str(output), "--image-size", "96", "96"]
    assert export_script.main(argv) == 0
    out = capsys.readouterr().out  # the project's logger writes to the console
    assert re.search(r"built the model and loaded .*tiny\.pth in \d+\.\d s", out)
    assert re.search(r"tracing the model .*: done in \d+\.\d s", out)
    assert re.search(rf"writing {re.escape(str(output))}: done in \d+\.\d s", out)
    assert re.search(rf"wrote {re.escape(str(output))} \(\d+\.\d MiB\) in \d+\.\d s", out)
    assert "open it with sparse_detr.export.load_exported(path)" in out


@pytest.mark.parametrize(
    "export_format, deform_attn, needed",
    [
        ("openvino", "grid_sample", r'load_exported\(path\).*"INFERENCE_PRECISION_HINT": "f32".*bf16'),
        ("onnx", "plugin", r"load_exported\(path\) \(runtime='openvino'.*TensorRT"),
        ("onnx", "grid_sample", r"load_exported\(path\)"),
        ("torch-export", "extension", r"import sparse_detr"),
    ],
)
def test_export_says_how_to_open_what_it_wrote(export_format, deform_attn, needed):
    assert re.search(needed, export_script.how_to_open(export_format, deform_attn))


def test_onnx_export_without_the_export_extra_names_it(monkeypatch, tiny_weights, tmp_path):
    import importlib.util

    from sparse_detr.export import export_model

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real_find_spec(name, *a)
    )
    model, _ = tiny_weights
    with pytest.raises(ModuleNotFoundError, match=r"needs onnx.*pip install 'sparse-detr\[export\]'"):
        export_model(model, tmp_path / "m.onnx")


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


@pytest.mark.parametrize("export_format, suffix", [("onnx", ""), ("torch-export", ""), ("openvino", ".bin")])
def test_export_refuses_to_write_over_its_weights_before_any_work(tiny_weights, tmp_path, capsys,
                                                                  export_format, suffix):
    _, weights = tiny_weights
    copy = tmp_path / ("weights" + (suffix or ".pth"))
    copy.write_bytes(weights.read_bytes())
    output = copy.with_suffix(".xml") if suffix else copy
    argv = ["--config-file", TINY_CONFIG, "--weights", str(copy), "--format", export_format,
            "--output", str(output)]
    assert export_script.main(argv) == 2
    err = capsys.readouterr().err
    expected = rf"export\.py: error: --output.* {re.escape(str(copy))} is the file --weights reads"
    assert re.search(expected, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert copy.read_bytes() == weights.read_bytes()


def test_ctrl_c_prints_one_line_and_exits_130(monkeypatch, tiny_weights, tmp_path, capsys):
    _, weights = tiny_weights

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export_script, "export_model", interrupted)
    argv = ["--config-file", TINY_CONFIG, "--weights", str(weights), "--output", str(tmp_path / "m.onnx")]
    assert export_script.main(argv) == 130
    err = capsys.readouterr().err.strip()
    assert err.endswith("interrupted (files are replaced only when complete: earlier ones are intact)")
    assert len(err.splitlines()) == 1
