"""Every tool checks its command line as train_net.py does: numeric options by range (argparse types), and
config overrides by one shared check (options first, unknown keys named with the keys that exist)."""

from __future__ import annotations

import pytest

from sparse_detr.config.validation import check_command_line_overrides
from sparse_detr.model_zoo.tool_configs import load_tool_config
from tests.helpers.project_scripts import TINY_CONFIG, load_script


def _work(tool: str):
    """The tool's function that raises its errors (``main`` prints them where a ``run`` function exists)."""
    module = TOOLS[tool][0]
    return getattr(module, "run", module.main)


TOOLS = {
    "demo": (load_script("demo"), ["--input", "x.png", "--output", "o"]),
    "visualize_tokens": (load_script("visualize_tokens"), ["--input", "x.png", "--output", "o"]),
    "export": (load_script("export"), ["--output", "o.onnx"]),
    "benchmark": (load_script("benchmark", "benchmarks"), ["--flops"]),
    "draw_predictions": (
        load_script("draw_predictions"),
        ["--weights", "w.pth", "--dataset", "shapes_tiny_val", "--output", "o.png"],
    ),
}
OUT_OF_RANGE = [
    ("demo", "--confidence-threshold", ["1.5", "-0.1", "nan"]),
    ("demo", "--rho", ["0", "2", "inf"]),
    ("visualize_tokens", "--top-k", ["0", "-3", "2.5"]),
    ("visualize_tokens", "--num-images", ["0", "-1"]),
    ("visualize_tokens", "--confidence-threshold", ["1.01", "-1"]),
    ("visualize_tokens", "--rho", ["0", "-0.5"]),
    ("draw_predictions", "--num-images", ["0", "-2"]),
    ("draw_predictions", "--score-threshold", ["2", "nan"]),
    ("benchmark", "--num-images", ["0", "-5"]),
    ("benchmark", "--batch-size", ["0"]),
    ("benchmark", "--num-runs", ["0"]),
    ("benchmark", "--warmup", ["-1"]),
    ("benchmark", "--rho", ["1.5", "0"]),
    ("export", "--rho", ["0", "1.2", "nan"]),
]


def _command_line(tool: str, tmp_path, *argv: str) -> list[str]:
    """The tool's required options (outputs under ``tmp_path``), then ``argv``."""
    _, required = TOOLS[tool]
    required = [str(tmp_path / r) if r in ("o", "o.onnx", "o.png") else r for r in required]
    return ["--config-file", TINY_CONFIG, *required, *argv]


@pytest.mark.parametrize(
    "tool, option, value", [(tool, option, v) for tool, option, values in OUT_OF_RANGE for v in values]
)
def test_out_of_range_options_are_refused_by_name(tool, option, value, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _work(tool)(_command_line(tool, tmp_path, option, value))
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert f"argument {option}" in error and repr(value) in error, error


@pytest.mark.parametrize("tool", ["demo", "visualize_tokens", "export", "benchmark"])
def test_an_option_after_the_overrides_is_refused_with_the_tool_usage(tool, tmp_path):
    with pytest.raises(ValueError, match=rf"Option '--device' comes after.*options go first.*{tool}\.py"):
        _work(tool)(_command_line(tool, tmp_path, "train.seed=1", "--device", "cpu"))


@pytest.mark.parametrize("tool", ["demo", "visualize_tokens", "export", "benchmark"])
def test_an_unknown_override_key_is_named_with_the_available_keys(tool, tmp_path):
    with pytest.raises(KeyError, match=r"Unknown config key 'model\.neck\.hiden_dim'.*hidden_dim"):
        _work(tool)(_command_line(tool, tmp_path, "model.neck.hiden_dim=64"))


def test_the_tools_and_train_net_share_one_override_check():
    cfg = load_tool_config(TINY_CONFIG)
    usage = "x.py --config-file CONFIG [options]"
    for opts, error in [
        (["train.max_iters=3"], r"Unknown config key 'train\.max_iters'.*Keys under 'train'.*max_iter"),
        (["train.max_iter=three"], r"train\.max_iter expected a number"),
        (["train.seed=1", "--rho"], r"options go first.*x\.py"),
    ]:
        with pytest.raises((KeyError, ValueError), match=error):
            check_command_line_overrides(cfg, opts, usage)
    check_command_line_overrides(cfg, ["model.query_init.num_queries=5", "+train.note=x"], usage)


def test_yacs_override_keys_are_named_with_the_available_keys(tmp_path):
    config = tmp_path / "yacs.yaml"
    config.write_text("MODEL:\n  META_ARCHITECTURE: SparseDETR\n")
    unknown = r"'MODEL\.SPARSE_DETR\.NUM_CLASES'.*'MODEL\.SPARSE_DETR'.*NUM_CLASSES"
    with pytest.raises(KeyError, match=unknown):
        load_tool_config(str(config), ["MODEL.SPARSE_DETR.NUM_CLASES", "3"])
    with pytest.raises(ValueError, match="KEY VALUE pairs"):
        load_tool_config(str(config), ["MODEL.SPARSE_DETR.NUM_CLASSES"])
    cfg = load_tool_config(str(config), ["MODEL.SPARSE_DETR.NUM_CLASSES", "3"])
    assert cfg.MODEL.SPARSE_DETR.NUM_CLASSES == 3
