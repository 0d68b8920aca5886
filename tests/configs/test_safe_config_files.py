"""Config files that would run code (yaml tags) or never finish loading (LazyConfig import cycles) are
refused by name at every door: model_zoo.get_config, the tools' config loading and train_net.py."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from sparse_detr.config.safe_yaml import ConfigImportCycleError, UnsafeConfigError, check_config_file
from sparse_detr.model_zoo.tool_configs import load_tool_config as load_config

ROOT = Path(__file__).resolve().parents[2]
PAYLOAD = '!!python/object/apply:os.system ["touch {marker}"]'


def _evil_yaml(tmp_path, body: str) -> tuple[Path, Path]:
    marker = tmp_path / "ran"
    path = tmp_path / "config.yaml"
    path.write_text(body.format(payload=PAYLOAD.format(marker=marker)))
    return path, marker


@pytest.mark.parametrize(
    "body, key",
    [
        ("model:\n  backbone:\n    depth: {payload}\n", "model.backbone.depth"),  # LazyConfig yaml
        ("MODEL:\n  WEIGHTS: x.pth\n  PIXEL_MEAN: [1, {payload}]\n", "MODEL.PIXEL_MEAN[1]"),  # yacs yaml
        ("{payload}\n", "(the document)"),
    ],
)
def test_yaml_tags_that_run_code_are_refused_naming_file_key_and_tag(tmp_path, body, key):
    path, marker = _evil_yaml(tmp_path, body)
    expected = rf"{re.escape(str(path))}: key '{re.escape(key)}' has the tag !!python/object/apply:os\.system"
    with pytest.raises(UnsafeConfigError, match=expected + ", which would run code"):
        load_config(str(path))
    assert not marker.exists()


def test_a_yacs_base_file_is_checked_too(tmp_path):
    base, marker = _evil_yaml(tmp_path, "MODEL:\n  META_ARCHITECTURE: {payload}\n")
    child = tmp_path / "child.yaml"
    child.write_text(f"_BASE_: {base.name}\nMODEL:\n  WEIGHTS: x.pth\n")
    with pytest.raises(UnsafeConfigError, match=rf"{base}: key 'MODEL.META_ARCHITECTURE'"):
        load_config(str(child))
    assert not marker.exists()


def test_plain_yaml_passes(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("model:\n  a: [1, 2.5, null, true, 'x']\n  b: {c: 2020-01-01}\n")
    check_config_file(path)


def test_lazyconfig_import_cycles_are_named(tmp_path):
    (tmp_path / "a.py").write_text("from .b import model\n")
    (tmp_path / "b.py").write_text("from .a import model\n")
    with pytest.raises(ConfigImportCycleError, match=r"a\.py -> .*b\.py -> .*a\.py"):
        load_config(str(tmp_path / "a.py"))
    (tmp_path / "self.py").write_text("from .self import model\n")
    with pytest.raises(ConfigImportCycleError, match=r"self\.py -> .*self\.py"):
        check_config_file(tmp_path / "self.py")


def test_train_net_refuses_an_unsafe_config_in_one_line(tmp_path):
    path, marker = _evil_yaml(tmp_path, "model:\n  backbone: {payload}\n")
    result = subprocess.run(
        [sys.executable, str(ROOT / "train_net.py"), "--config-file", str(path)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "train_net.py: error:" in result.stderr and "model.backbone" in result.stderr
    assert not marker.exists()
