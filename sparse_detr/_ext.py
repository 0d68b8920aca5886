"""Loader of the compiled extension ``sparse_detr._C`` (multi-scale deformable attention kernels).

Importing this module never fails: when ``_C`` is missing, :data:`EXTENSION_IMPORT_ERROR` holds the
reason and :func:`require_extension` raises an ImportError that says how to build it.
Only an ImportError selects the fallback, so errors raised by a built kernel always surface.
"""

from __future__ import annotations

BUILD_COMMAND = "pip install --no-build-isolation -e ."

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


def require_extension():
    """Return the ``sparse_detr._C`` module or raise an ImportError that says how to build it."""
    if _C is None:
        raise ImportError(
            f"sparse_detr._C is not built or does not load ({EXTENSION_IMPORT_ERROR}). Build it from the "
            f"repository root with `{BUILD_COMMAND}` (add FORCE_CUDA=1 to compile the CUDA kernels "
            "without a visible GPU)."
        ) from EXTENSION_IMPORT_ERROR
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
