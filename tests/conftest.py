"""Fixtures shared across the test suite."""
import importlib.util
from pathlib import Path

import pytest

REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


@pytest.fixture(scope="session")
def official():
    """The official Sparse DETR fixture ``../shared/reference`` (skipped when that directory is absent)."""
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"official fixture directory {REFERENCE_DIR} not present")
    spec = importlib.util.spec_from_file_location("load_fixture", REFERENCE_DIR / "load_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load_official_fixture(REFERENCE_DIR / "official_sparse_detr_fixture_a.pt")
