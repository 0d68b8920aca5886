"""The exported graph is the model's own forward: few of its operations are written in sparse_detr/export/
(``benchmarks/export_frames.py``, the innermost sparse_detr frame of each node's stack trace)."""

import importlib.util
from pathlib import Path

import pytest

import sparse_detr
from sparse_detr.export.exporters import export_torch_program
from tests.helpers.export_cases import EXPORT_SIZE, build_case

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _frames_script():
    spec = importlib.util.spec_from_file_location("export_frames", ROOT / "benchmarks" / "export_frames.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_exported_operations_come_from_the_model():
    frames = _frames_script()
    package = Path(sparse_detr.__file__).resolve().parent
    with frames.record_project_frames(package):
        program = export_torch_program(build_case("objectness"), image_size=EXPORT_SIZE)
    counts = frames.frame_counts(program, package)
    share = frames.export_share(counts)
    print(f"{sum(counts.values())} operations, {share:.1%} with their innermost frame in sparse_detr/export/")
    assert share < 0.05
    for component in ("neck.py", "encoder.py", "decoder.py", "tokens.py", "scorers.py", "postprocess.py"):
        assert any(path and path.endswith(component) for path in counts), component
