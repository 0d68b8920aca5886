"""Loader of the compiled extension ``sparse_detr._C`` (multi-scale deformable attention kernels).

Importing this module never fails: when ``_C`` is missing, :data:`EXTENSION_IMPORT_ERROR` holds the
reason and :func:`require_extension` raises an ImportError that says how to build it.
Only an ImportError selects the fallback, so errors raised by a built kernel always surface.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

BUILD_COMMAND = "pip install --no-build-isolation -e ."
PACKAGE_DIR = Path(__file__).resolve().parent

try:
    import sparse_detr._C as _C
except ImportError as error:  # the only failure that means "not built" (or built for another torch)
    _C = None
    EXTENSION_IMPORT_ERROR: ImportError | None = error
else:
    EXTENSION_IMPORT_ERROR = None


def extension_available() -> bool:
    """True when ``sparse_detr._C`` imported, i.e. ``torch.ops.sparse_detr.*`` ops are registered."""
    return _C is not None


def _installed_build_elsewhere() -> Path | None:
    """The ``_C`` file of an installed ``sparse-detr`` distribution outside this package directory, if any."""
    try:
        files = importlib.metadata.distribution("sparse-detr").files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if file.name.startswith("_C") and file.suffix in (".so", ".pyd"):
            path = Path(file.locate()).resolve()
            if path.is_file() and path.parent != PACKAGE_DIR:
                return path
    return None


def missing_extension_message() -> str:
    """Why ``sparse_detr._C`` is missing, and how to build it (for the fallback warning and the error)."""
    built_files = [p for p in PACKAGE_DIR.glob("_C*") if p.suffix in (".so", ".pyd")]
    if built_files:
        reason = f"{built_files[0]} does not load ({EXTENSION_IMPORT_ERROR}; built for another torch?)"
    else:
        reason = f"not built: {PACKAGE_DIR} holds no compiled _C file"
    elsewhere = _installed_build_elsewhere()
    if elsewhere is not None:
        reason += (
            f". This is a source checkout shadowing the installed, built sparse_detr ({elsewhere.parent}): "
            "run the scripts from outside the checkout's root or without it on PYTHONPATH, or build it in "
            "place"
        )
    return (
        f"sparse_detr._C is {reason}. Build it from the repository root with `{BUILD_COMMAND}` (or "
        "`python setup.py build_ext --inplace`; FORCE_CUDA=1 compiles the CUDA kernels without a visible GPU)"
    )


def require_extension():
    """Return the ``sparse_detr._C`` module or raise an ImportError that says how to build it."""
    if _C is None:
        raise ImportError(missing_extension_message() + ".") from EXTENSION_IMPORT_ERROR
    return _C


def extension_info() -> dict:
    """How the extension was built, for a collect_env-style report.

    Returns:
        dict with ``built`` (bool), ``with_cuda`` (bool), ``cuda_arch_list`` (str: the
        ``TORCH_CUDA_ARCH_LIST`` used at build time, "default" when it was unset so torch chose,
        "" for a CPU-only build),
        ``compiled_with_torch`` (str), and ``import_error`` (str, only when not built).
    """
    if _C is None:
        return {"built": False, "with_cuda": False, "cuda_arch_list": "", "compiled_with_torch": "",
                "import_error": str(EXTENSION_IMPORT_ERROR)}
    return {
        "built": True,
        "with_cuda": bool(_C.with_cuda()),
        "cuda_arch_list": _C.cuda_arch_list(),
        "compiled_with_torch": _C.compiled_with_torch(),
    }
