"""Fixtures shared across the test suite."""
import importlib.util
import os
from pathlib import Path

import pytest

REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
REFERENCE_FILE = REFERENCE_DIR / "official_sparse_detr_fixture_a.pt"


def require_reference() -> None:
    """Skip the calling test when the official fixture is absent; fail instead in CI (``CI=true``)."""
    if REFERENCE_FILE.is_file():
        return
    message = f"official fixture not found at {REFERENCE_FILE}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}: CI runs the official-parity tests (fetch the fixture into {REFERENCE_DIR})")
    pytest.skip(message)


@pytest.fixture(scope="session")
def official():
    """The official Sparse DETR fixture in ``../shared/reference`` (see :func:`require_reference`)."""
    require_reference()
    spec = importlib.util.spec_from_file_location("load_fixture", REFERENCE_DIR / "load_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load_official_fixture(REFERENCE_DIR / "official_sparse_detr_fixture_a.pt")
