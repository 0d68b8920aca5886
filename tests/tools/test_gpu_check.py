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
    # no wheels carried (.whl/ empty): every other step runs, and the verdict says what a GPU run would lack
    (tmp_path / "no_wheels").mkdir()
    env = dict(os.environ, OUT=str(tmp_path / "out"), TMPDIR=str(tmp_path), PYTHON=sys.executable,
               WHEELS_DIR=str(tmp_path / "no_wheels"))
    result = subprocess.run(["bash", "tools/gpu_check.sh", "--dry-run"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=900)
    last_line = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr[-2000:]
    assert last_line.startswith("[gpu_check] FAILED (dry run)"), last_line
    assert "(failed: dependencies)" in last_line and "wheels: 9 missing from" in last_line, last_line
    report = json.loads((tmp_path / "out" / "gpu_report.json").read_text())
    steps = {step["name"]: step["status"] for step in report["steps"]}
    assert steps == {"environment": "ok", "dependencies": "failed (exit 1)", "build": "skipped",
                     "cuda-tests": "ok", "training-overrides": "ok", "training": "skipped", "benchmark": "ok"}
    assert len(report["wheels"]["missing"]) == 9
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


def _fake_wheels(directory: Path, gpu_check, content: bytes = b"not the tested wheel") -> list[Path]:
    """A file with the right name for each requirement of the list (py3-none-any), holding ``content``."""
    directory.mkdir(exist_ok=True)
    wheels = []
    for name, version in gpu_check.wheel_requirements().items():
        wheels.append(directory / f"{name.replace('-', '_')}-{version}-py3-none-any.whl")
        wheels[-1].write_bytes(content + name.encode())
    return wheels


def test_every_carried_wheel_has_a_pinned_sha256(gpu_check):
    hashes = gpu_check.wheel_hashes()
    assert hashes and all(value and len(value) == 64 for value in hashes.values()), hashes


def test_missing_wheels_are_flagged_in_the_summary(gpu_check, tmp_path):
    for directory in (tmp_path / "absent", tmp_path):
        summary = gpu_check.verify_wheels(directory)
        count = len(gpu_check.wheel_requirements())
        assert len(summary["missing"]) == count and summary["errors"]
        assert gpu_check.wheels_summary_line(summary).startswith(f"wheels: {count} missing from {directory}")
    assert gpu_check.check_wheels(tmp_path, False, None) == 1


def test_wheels_of_the_right_names_but_other_contents_are_flagged(gpu_check, tmp_path, monkeypatch, capsys):
    wheels = _fake_wheels(tmp_path / "whl", gpu_check)
    summary = gpu_check.verify_wheels(tmp_path / "whl")
    assert sorted(summary["wrong_hash"]) == sorted(w.name for w in wheels) and not summary["verified"]
    assert "9 with other contents than pinned (sha256)" in gpu_check.wheels_summary_line(summary)
    assert gpu_check.check_wheels(tmp_path / "whl", False, None) == 1
    assert f"{wheels[0]}: sha256 " in capsys.readouterr().out

    # --write-hashes (tools/gpu_wheels.sh after a version change) pins what is there; then they verify
    pinned = tmp_path / "gpu_wheels.txt"
    pinned.write_text(gpu_check.WHEEL_LIST.read_text())
    monkeypatch.setattr(gpu_check, "WHEEL_LIST", pinned)
    assert gpu_check.check_wheels(tmp_path / "whl", True, None) == 0
    assert gpu_check.verify_wheels(tmp_path / "whl")["errors"] == []
    assert "# " in pinned.read_text()  # the comments are kept
    wheels[3].write_bytes(wheels[3].read_bytes() + b"x")  # one wheel changed afterwards
    assert gpu_check.verify_wheels(tmp_path / "whl")["wrong_hash"] == [wheels[3].name]


def test_the_report_is_not_ok_without_verified_wheels(gpu_check, tmp_path, capsys):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    (work / "steps.tsv").write_text("environment\tok\t1\n")
    assert gpu_check.write_report(work, out, True, "tools/gpu_check.sh --dry-run", 1.0) == 1
    assert "FAILED (dry run)" in capsys.readouterr().out
    (work / "wheels.json").write_text(json.dumps(gpu_check.verify_wheels(tmp_path / "none")))
    assert gpu_check.write_report(work, out, True, "tools/gpu_check.sh --dry-run", 1.0) == 1
    assert "wheels: 9 missing from" in capsys.readouterr().out.splitlines()[-1]
    assert "wheels missing" in (out / "gpu_report.md").read_text()
