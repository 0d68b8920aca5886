"""Imported first by ``train_net.py``: run an installed, built ``sparse_detr`` rather than this checkout's
unbuilt copy.

``python train_net.py`` puts the repository root first on ``sys.path``, so after a non-editable
``pip install .`` the checkout's ``sparse_detr/`` (whose ``_C`` extension was compiled into the installed copy
only) would shadow the installed package and silently run the slower PyTorch attention. When the checkout's
package holds no compiled ``_C`` and another ``sparse_detr`` is importable, the root leaves ``sys.path``.
An editable install or an in-place build (``python setup.py build_ext --inplace``) keeps the checkout.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def _checkout_is_built() -> bool:
    return any(p.suffix in (".so", ".pyd") for p in (ROOT / "sparse_detr").glob("_C*"))


def prefer_installed_package() -> None:
    """Drop the repository root from the front of ``sys.path`` when an installed ``sparse_detr`` exists
    and the checkout's is not built."""
    if _checkout_is_built() or not sys.path or Path(sys.path[0] or ".").resolve() != ROOT:
        return
    root_entry = sys.path.pop(0)
    if importlib.util.find_spec("sparse_detr") is None:  # nothing installed: the checkout it is
        sys.path.insert(0, root_entry)


prefer_installed_package()
