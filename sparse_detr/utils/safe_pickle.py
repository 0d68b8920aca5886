"""Reading ``.pkl`` weight files without running code from them.

A pickle names Python callables (``GLOBAL`` opcodes) that the loader imports and calls, so a crafted
``.pkl`` runs whatever it likes under ``pickle.load``. Legitimate ``.pkl`` checkpoints (Detectron2's
ImageNet backbones such as ``detectron2://ImageNetPretrained/torchvision/R-50.pkl``, Detectron2 / Caffe2
model-zoo files) hold only dicts and lists of numpy arrays, strings and numbers, so the unpickler here
resolves the few globals those need and refuses every other one with an error naming the file and the
refused global.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
from typing import IO, Any

__all__ = [
    "UnsafeCheckpointError",
    "check_checkpoint_file",
    "load_restricted_pickle",
    "unreadable_checkpoint_error",
]

# (module, name) pairs a weights pickle may reference. numpy 2 pickles name ``numpy._core``, numpy 1
# pickles ``numpy.core``; both resolve to whichever the installed numpy has.
_NUMPY_CORE_GLOBALS = {("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer")}
_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    # protocol-2 pickles written by Python 3 store bytes as _codecs.encode(str, "latin1")
    ("_codecs", "encode"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "complex"),
    ("__builtin__", "set"),
    ("__builtin__", "frozenset"),
    ("__builtin__", "complex"),
}


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A weights file asks for a Python global that weights do not need (it could run code)."""


def _numpy_core(submodule: str):
    try:
        return importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:  # numpy 1.x
        return importlib.import_module(f"numpy.core.{submodule}")


def _numpy_dtype_class(name: str):
    """``numpy.dtypes.Float32DType`` and friends (numpy 2 pickles of dtypes may name them)."""
    dtypes = importlib.import_module("numpy.dtypes")
    return getattr(dtypes, name)


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], source: str):
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        package, _, submodule = module.rpartition(".")
        if package in ("numpy.core", "numpy._core") and (submodule, name) in _NUMPY_CORE_GLOBALS:
            return getattr(_numpy_core(submodule), name)
        if module == "numpy.dtypes" and name.endswith("DType"):
            return _numpy_dtype_class(name)
        if (module, name) in _ALLOWED_GLOBALS:
            if module == "__builtin__":  # Python 2 pickles
                module = "builtins"
            return getattr(importlib.import_module(module), name)
        raise UnsafeCheckpointError(
            f"Refusing to load {self.source!r}: it asks for the Python global '{module}.{name}', which a "
            "weights file does not need and which could run code. A .pkl checkpoint may hold only dicts / "
            "lists of numpy arrays, strings and numbers; save model weights with torch.save(state_dict) "
            "instead, or convert the file in a trusted environment."
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeCheckpointError(
            f"Refusing to load {self.source!r}: it holds persistent references ({pid!r}), which a .pkl "
            "weights file (dicts of numpy arrays) does not use"
        )


def check_checkpoint_file(path: str) -> None:
    """Raise ``FileNotFoundError`` / ``ValueError`` naming ``path`` if it is missing, not a file or empty."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"Checkpoint file {path!r} does not exist")
    if not os.path.isfile(path):
        raise IsADirectoryError(f"Checkpoint {path!r} is not a file")
    if os.path.getsize(path) == 0:
        raise ValueError(
            f"Checkpoint file {path!r} is empty (0 bytes): it was not written completely; use another "
            "checkpoint or write it again"
        )


def unreadable_checkpoint_error(path: str, error: BaseException) -> ValueError:
    """The error of every checkpoint loader for a file ``torch.load`` cannot read (truncated, another
    format): the file named, with torch's own reason."""
    return ValueError(
        f"Checkpoint file {path!r} is not a readable checkpoint (truncated or another format?): "
        f"{type(error).__name__}: {error}"
    )


def load_restricted_pickle(file: str | IO[bytes], source: str | None = None) -> Any:
    """Unpickle a ``.pkl`` weights file, allowing only numpy arrays, containers, strings and numbers.

    Args:
        file: a local path, or a binary file object.
        source: the name used in errors (default: the path).
    Raises:
        UnsafeCheckpointError: the file references any other Python global (nothing of it is executed).
        ValueError: the file is empty or not a complete pickle.
    """
    if isinstance(file, (str, os.PathLike)):
        path = os.fspath(file)
        check_checkpoint_file(path)
        with open(path, "rb") as f:
            return load_restricted_pickle(io.BytesIO(f.read()), source or path)
    source = source or getattr(file, "name", "<pickle>")
    try:
        return _RestrictedUnpickler(file, source).load()
    except UnsafeCheckpointError:
        raise
    except EOFError as error:
        raise ValueError(
            f"Checkpoint file {source!r} is empty or truncated (unexpected end of file)"
        ) from error
    except (pickle.UnpicklingError, ValueError, TypeError, AttributeError, IndexError, KeyError) as error:
        raise ValueError(
            f"Checkpoint file {source!r} is not a readable pickle: {type(error).__name__}: {error}"
        ) from error
