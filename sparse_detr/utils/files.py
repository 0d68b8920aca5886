"""Writing a tool's outputs: never over one of its own inputs, never half a file.

- :func:`refuse_overwriting_inputs`: before any work, an output that is one of the inputs is refused by name.
- :func:`atomic_write` / :func:`atomic_output`: the file is written under a temporary name in its own folder
  (``.<name>.tmp<pid><suffix>``) and moved into place with ``os.replace`` (atomic on POSIX) once complete, so
  a kill or a full disk leaves the previous file as it was. A full disk (or quota) raises
  :class:`NoSpaceLeftError` naming the folder.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "NoSpaceLeftError",
    "OverwritesInputError",
    "TEMPORARY_FILE",
    "atomic_output",
    "atomic_write",
    "refuse_overwriting_inputs",
]

# ".<name>.tmp<pid>" or ".<name>.tmp<pid><suffix>" (writers that need the suffix: figures, OpenVINO IRs)
TEMPORARY_FILE = re.compile(r"^\..+\.tmp(\d+)(\.[A-Za-z0-9]+)?$")
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class NoSpaceLeftError(OSError):
    """A file could not be written: its folder's file system is full (or over quota)."""


class OverwritesInputError(ValueError):
    """A tool was asked to write over a file it reads."""


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def refuse_overwriting_inputs(
    outputs: Mapping[str, str | os.PathLike | None], inputs: Mapping[str, str | os.PathLike | None]
) -> None:
    """Raise :class:`OverwritesInputError` when an output is one of the inputs (same file, links resolved).

    Args:
        outputs: what the tool writes, by the option or name a user knows (``{"--output": path}``).
        inputs: what it reads, likewise (``{"--weights": path, "--config-file": path}``); empty, None and
            non-local entries (URLs, model-zoo names) are skipped.
    """
    for out_name, output in outputs.items():
        if not output:
            continue
        for in_name, source in inputs.items():
            if not source or "://" in str(source):
                continue
            if _same_file(Path(output), Path(source)):
                raise OverwritesInputError(
                    f"{out_name} {output} is the file {in_name} reads: writing it would destroy the input; "
                    "choose another output"
                )


def _temporary_path(path: Path, keep_suffix: bool) -> Path:
    suffix = path.suffix if keep_suffix else ""
    return path.parent / f".{path.name}.tmp{os.getpid()}{suffix}"


def _no_space(error: OSError, path: Path) -> NoSpaceLeftError:
    return NoSpaceLeftError(
        errno.ENOSPC,
        f"no space left in {path.parent} while writing {path.name} ({error.strerror or error}); "
        "the previous file, if any, is intact",
    )


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, keep_suffix: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer to fill; on success it becomes ``path``.

    The temporary file keeps ``path``'s suffix (writers that pick the format from it). On an error the
    temporary file is removed and ``path`` is left as it was; a full disk raises :class:`NoSpaceLeftError`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_path(path, keep_suffix)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        if error.errno in _NO_SPACE:
            raise _no_space(error, path) from error
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def atomic_write(path: str | os.PathLike, content: bytes | Callable[[BinaryIO], object]) -> Path:
    """Write ``content`` (bytes, or a function writing to a binary file) to ``path`` atomically."""
    path = Path(path)
    with atomic_output(path, keep_suffix=False) as tmp, open(tmp, "wb") as f:
        if isinstance(content, (bytes, bytearray, memoryview)):
            f.write(content)
        else:
            content(f)
        f.flush()
    return path
