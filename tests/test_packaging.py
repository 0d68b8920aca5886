"""The package as a user installs it: a wheel, installed outside the checkout, used from another directory.

The wheel is built once per session (it compiles the extension, about a minute) and installed with
``pip install --no-deps --target`` into a scratch directory; the checks run in a subprocess whose working
directory and ``PYTHONPATH`` hold nothing of the checkout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def installed_wheel(tmp_path_factory) -> Path:
    """A scratch directory with the ``sparse_detr`` wheel built from this checkout installed in it."""
    wheel_dir = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation", "--no-deps",
         "-w", str(wheel_dir), str(REPO)],
        check=True, cwd=REPO,
    )
    (wheel,) = wheel_dir.glob("sparse_detr-*.whl")
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
    )
    return target


def _run_outside(target: Path, cwd: Path, script: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_wheel_model_zoo_works_outside_the_checkout(installed_wheel, tmp_path):
    report = _run_outside(installed_wheel, tmp_path, """
        import json
        from detectron2.config import CfgNode
        from omegaconf import DictConfig
        import sparse_detr
        from sparse_detr import model_zoo
        from sparse_detr._ext import extension_info
        from sparse_detr.model_zoo.model_zoo import config_root

        names = model_zoo.list_configs()
        for name in names:
            expected_type = CfgNode if name.endswith(".yaml") else DictConfig
            assert isinstance(model_zoo.get_config(name), expected_type), name
        model = model_zoo.get("quickstart_shapes", device="cpu")
        print(json.dumps({
            "package": sparse_detr.__path__[0],
            "config_root": str(config_root()),
            "configs": names,
            "num_parameters": sum(p.numel() for p in model.parameters()),
            "extension_built": extension_info()["built"],
        }))
    """)
    target = str(installed_wheel.resolve())
    assert report["package"].startswith(target), report["package"]
    assert report["config_root"].startswith(target), report["config_root"]
    expected = sorted(p.stem for p in (REPO / "configs").glob("*.py")) + sorted(
        f"yacs/{p.name}" for p in (REPO / "configs/yacs").glob("*.yaml") if not p.name.startswith("Base-")
    )
    assert report["configs"] == expected
    assert report["num_parameters"] > 1_000_000
    assert report["extension_built"]
    (metadata,) = installed_wheel.glob("sparse_detr-*.dist-info/METADATA")
    requires = {line.split(":", 1)[1].strip() for line in metadata.read_text().splitlines()
                if line.startswith("Requires-Dist:")}
    assert {"iopath", "fvcore", "timm", "pycocotools"} <= requires
    assert not any(r.startswith(("torch", "detectron2")) for r in requires)


def test_wheel_collect_env_reports_the_extension(installed_wheel, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(installed_wheel)
    command = [sys.executable, "-m", "sparse_detr.collect_env"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "sparse_detr._C  " in result.stdout and "built" in result.stdout
    assert "sparse_detr._C built against torch" in result.stdout
    assert str(installed_wheel.resolve()) in result.stdout


def test_setup_declares_what_the_package_imports():
    """Every third-party import of the package is in install_requires; sparse_detr.export's may instead be in
    the "export" extra (the deployment runtimes)."""
    import ast

    tree = ast.parse((REPO / "setup.py").read_text())
    assigned = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and getattr(node.targets[0], "id", "") in ("INSTALL_REQUIRES", "EXTRAS_REQUIRE")
    }

    def names(requirements: list[str]) -> set[str]:
        return {item.split(">")[0].split("<")[0].split("=")[0] for item in requirements}

    required, export_extra = names(assigned["INSTALL_REQUIRES"]), names(assigned["EXTRAS_REQUIRE"]["export"])
    distribution_of = {
        "PIL": "Pillow", "hydra": "hydra-core", "yaml": "PyYAML",
        "onnxruntime_extensions": "onnxruntime-extensions",
    }
    user_provided = {"torch", "torchvision", "detectron2", "sparse_detr"}
    undeclared = set()
    for path in (REPO / "sparse_detr").rglob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
        declared = required | (export_extra if "export" in path.relative_to(REPO).parts else set())
        undeclared |= {
            distribution_of.get(name, name) for name in imported
            if name not in sys.stdlib_module_names and name not in user_provided
        } - declared
    assert not undeclared, f"imported but not declared in setup.py: {sorted(undeclared)}"
