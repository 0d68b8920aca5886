"""The public API: what the package faces list in ``__all__``, each entry importable and documented."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import sparse_detr

PACKAGES = sorted(
    ["sparse_detr"]
    + [
        info.name
        for info in pkgutil.walk_packages(sparse_detr.__path__, "sparse_detr.")
        if info.ispkg and not info.name.split(".")[-1].startswith("_")
    ]
)
MAX_PUBLIC_NAMES = 40  # all packages together: a small surface, one obvious way per task


@pytest.mark.parametrize("package", PACKAGES)
def test_every_all_entry_imports_and_has_a_docstring(package):
    module = importlib.import_module(package)
    names = getattr(module, "__all__", [])
    namespace: dict = {}
    exec(f"from {package} import *", namespace)  # noqa: S102  (what a star import gives)
    assert set(names) <= set(namespace), f"{package}.__all__ lists names it does not import"
    for name in names:
        value = getattr(module, name)
        if name == "__version__":
            assert isinstance(value, str)
            continue
        doc = inspect.getdoc(value)
        assert doc and doc.strip(), f"{package}.{name} has no docstring"


def test_the_public_api_stays_small():
    names = [f"{p}.{n}" for p in PACKAGES for n in getattr(importlib.import_module(p), "__all__", [])]
    assert len(names) <= MAX_PUBLIC_NAMES, names
