"""tools/gpu_check.sh and its helpers: the dry run on this (CPU) machine, the dependency check, the
training-loss and target verdicts. The GPU run itself needs a GPU machine (see the script)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check_helpers", REPO / "tools" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_dry_run_runs_every_cpu_step_and_writes_the_report(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path / "out"), TMPDIR=str(tmp_path), PYTHON=sys.executable)
    result = subprocess.run(["bash", "tools/gpu_check.sh", "--dry-run"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=900)
    last_line = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert last_line.startswith("[gpu_check] OK (dry run)"), last_line
    report = json.loads((tmp_path / "out" / "gpu_report.json").read_text())
    steps = {step["name"]: step["status"] for step in report["steps"]}
    assert steps == {"environment": "ok", "dependencies": "ok", "build": "skipped", "cuda-tests": "ok",
                     "training-overrides": "ok", "training": "skipped", "benchmark": "ok"}
    # the CUDA tests were collected (and skipped here), the benchmark wrote every table
    assert report["tests"]["tests"] > 20 and report["tests"]["skipped"] == report["tests"]["tests"]
    bench = report["bench"]
    assert len(bench["kernel"]) == 12 and all(row["pytorch_ms"] > 0 for row in bench["kernel"])
    assert {row["model"] for row in bench["model"]["inference"]} == {"dense", "rho=0.1"}
    assert all(row["loss_finite"] for row in bench["model"]["training"])
    markdown = (tmp_path / "out" / "gpu_report.md").read_text()
    assert "## Kernel" in markdown and "## Inference" in markdown and "dry run" in markdown
    assert set(report["targets"].values()) == {None}  # CPU numbers at small sizes judge nothing
    assert (tmp_path / "out" / "gpu_check.log").stat().st_size > 0
    assert not list(tmp_path.glob("gpu_check.*")), "the scratch directory is removed"


def test_dependency_check_passes_and_flags_a_missing_wheel(gpu_check, tmp_path, monkeypatch, capsys):
    assert gpu_check.check_deps(None) == 0
    lines = [line for line in gpu_check.WHEEL_LIST.read_text().splitlines() if not line.startswith("yacs")]
    reduced = tmp_path / "gpu_wheels.txt"
    reduced.write_text("\n".join(lines))
    monkeypatch.setattr(gpu_check, "WHEEL_LIST", reduced)
    assert gpu_check.check_deps(None) == 1
    assert "yacs (required by" in capsys.readouterr().out


def test_dependency_check_flags_a_wheel_nothing_needs(gpu_check, tmp_path, monkeypatch, capsys):
    extended = tmp_path / "gpu_wheels.txt"
    extended.write_text(gpu_check.WHEEL_LIST.read_text() + "\nblack==26.10.1\n")
    monkeypatch.setattr(gpu_check, "WHEEL_LIST", extended)
    assert gpu_check.check_deps(None) == 1
    assert "carries black, which nothing needs" in capsys.readouterr().out


def _metrics(path: Path, losses: list[float]) -> Path:
    path.write_text("\n".join(json.dumps({"iteration": 5 * i + 4, "total_loss": loss})
                              for i, loss in enumerate(losses)))
    return path


@pytest.mark.parametrize("losses, verdict", [
    ([9.0, 8.5, 8.0, 7.0, 6.5, 6.0, 5.0, 5.5, 4.0, 4.2], 0),
    ([4.0, 4.5, 5.0, 5.0, 6.0, 6.5, 7.0, 7.5, 8.0, 9.0], 1),
    ([9.0, 8.5, 8.0, 7.0, float("nan"), 6.0, 5.0, 5.5, 4.0, 4.2], 1),
])
def test_training_must_lower_a_finite_loss(gpu_check, tmp_path, losses, verdict):
    summary = tmp_path / "summary.json"
    assert gpu_check.train_summary(_metrics(tmp_path / "metrics.json", losses), summary) == verdict
    assert json.loads(summary.read_text())["iterations"] == 50


def test_targets(gpu_check):
    speedups = [("dense encoder", "forward", 5.0), ("dense encoder", "forward+backward", 2.5),
                ("decoder", "forward", 1.2)]
    kernel = [{"case": case, "mode": mode, "speedup": speedup} for case, mode, speedup in speedups]
    inference = [{"model": "dense", "precision": "float32", "batch": 4, "fps": 10.0},
                 {"model": "rho=0.1", "precision": "float32", "batch": 4, "fps": 15.0}]
    tests = {"tests": 30, "failures": 0, "errors": 0, "skipped": 1}
    bench = {"kernel": kernel, "model": {"inference": inference}}
    targets = gpu_check.evaluate_targets(bench, {"finite": True}, tests)
    assert targets == {"cuda_tests_pass": False, "kernel_faster_everywhere": True,
                       "kernel_3x_dense_fwd_bwd": False, "sparse_1.4x_dense_fps": True,
                       "amp_training_finite": True}
    assert set(gpu_check.evaluate_targets(None, None, None).values()) == {None}
