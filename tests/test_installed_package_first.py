"""A non-editable install used with the checkout's scripts: train_net.py imports the installed, built package,
not the checkout's unbuilt copy; an unbuilt package says once that it runs the PyTorch fallback and how to
build the kernels."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXTENSION = next(p for p in (ROOT / "sparse_detr").glob("_C*") if p.suffix in (".so", ".pyd"))

# The test environment may hold an editable install of another checkout, whose import finder resolves
# ``sparse_detr._C`` in that checkout whatever the package imported; a regular install has no such finder.
ATTENTION_TWICE = """
import sys
sys.meta_path = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
import warnings
import torch
from sparse_detr.layers.ms_deform_attn_function import multi_scale_deform_attn
value = torch.rand(1, 4, 1, 2)
shapes, starts = torch.tensor([[2, 2]]), torch.tensor([0])
locations, weights = torch.rand(1, 3, 1, 1, 2, 2), torch.rand(1, 3, 1, 1, 2)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for _ in range(2):
        multi_scale_deform_attn(value, shapes, starts, locations, weights)
for warning in caught:
    print("WARNING:", warning.message)
"""


@pytest.fixture(scope="module")
def site_and_checkout(tmp_path_factory):
    """``site/``: an installed, built sparse_detr (with its dist-info); ``checkout/``: a source checkout
    whose package was never built (train_net.py beside it)."""
    base = tmp_path_factory.mktemp("install")
    ignore = shutil.ignore_patterns("__pycache__", "configs")
    shutil.copytree(ROOT / "sparse_detr", base / "site/sparse_detr", ignore=ignore)
    dist_info = base / "site/sparse_detr-0.1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: sparse-detr\nVersion: 0.1.0\n")
    (dist_info / "RECORD").write_text(f"sparse_detr/__init__.py,,\nsparse_detr/{EXTENSION.name},,\n")
    checkout = base / "checkout"
    shutil.copytree(ROOT / "sparse_detr", checkout / "sparse_detr", ignore=shutil.ignore_patterns(
        "__pycache__", "configs", "_C*.so", "_C*.pyd"))
    for script in ("train_net.py", "_prefer_installed_sparse_detr.py"):
        shutil.copy(ROOT / script, checkout / script)
    return base / "site", checkout


def _run(args: list[str], pythonpath: list[Path], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, pythonpath))}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_train_net_of_the_checkout_imports_the_installed_package(site_and_checkout, tmp_path):
    site, checkout = site_and_checkout
    result = _run(["-v", str(checkout / "train_net.py"), "--help"], [site], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    imported = [line for line in result.stderr.splitlines() if "sparse_detr/__init__.py" in line]
    assert imported and all(str(site) in line for line in imported), imported[:3]
    assert not any(str(checkout / "sparse_detr") in line for line in result.stderr.splitlines())


@pytest.mark.slow
def test_an_unbuilt_package_warns_once_naming_the_fallback_and_the_build(site_and_checkout, tmp_path):
    site, checkout = site_and_checkout
    alone = _run(["-c", ATTENTION_TWICE], [checkout], tmp_path)
    assert alone.returncode == 0, alone.stderr[-3000:]
    (warning,) = [line for line in alone.stdout.splitlines() if line.startswith("WARNING:")]
    assert "PyTorch fallback" in warning and "not built" in warning
    assert "pip install --no-build-isolation -e ." in warning and "partially initialized" not in warning
    # the checkout first on the path, before an installed build: the warning says which one is shadowed
    shadowing = _run(["-c", ATTENTION_TWICE], [checkout, site], tmp_path)
    (warning,) = [line for line in shadowing.stdout.splitlines() if line.startswith("WARNING:")]
    assert f"shadowing the installed, built sparse_detr ({site / 'sparse_detr'})" in warning
