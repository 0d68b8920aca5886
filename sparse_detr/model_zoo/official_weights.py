"""``sparse_detr://official/<release file stem>``: the official Sparse DETR checkpoints by name.

A Detectron2 path handler (iopath ``PathHandler`` on ``detectron2.utils.file_io.PathManager``, registered
when ``sparse_detr`` is imported), so every place that reads weights through Detectron2 accepts these names:
``cfg.MODEL.WEIGHTS``, ``train.init_checkpoint``, ``DetectionCheckpointer.load``, the tools' ``--weights``::

    from detectron2.utils.file_io import PathManager
    weights = PathManager.get_local_path("sparse_detr://official/sparse_detr_r50_10")

The first call downloads the release file (``$SPARSE_DETR_OFFICIAL_URL/<stem>.pth``, by default the official
release server), converts it with :func:`sparse_detr.checkpoint.convert_official_checkpoint` (80 COCO
classes in Detectron2's contiguous order, so the model-zoo configs and ``COCOEvaluator`` take it as it is) and
caches ``model_final.pth`` and ``config.yaml`` (the LazyConfig of exactly its architecture) under
``$SPARSE_DETR_CACHE/official/<stem>/`` (default ``~/.cache/sparse_detr``). Later calls return the cached
file without touching the network.

A download whose size differs from the server's ``Content-Length``, that does not finish within
``$SPARSE_DETR_DOWNLOAD_TIMEOUT`` seconds (default 1800), whose zip members fail their CRC-32, that holds
another architecture than its name promises (backbone, rho, layer counts: :mod:`.release_contents`), or that
``torch.load`` or the converter refuses, is deleted and reported; nothing is cached unless the conversion
succeeded (files are written under a temporary name and moved into place; the staging folders of killed
downloads are removed by the next call). A cache that cannot be written (read-only, full, a file in the
way) and a malformed ``SPARSE_DETR_OFFICIAL_URL`` are reported naming the variable. Without network access,
download the release file by other means and put it at
``$SPARSE_DETR_CACHE/official/downloads/<stem>.pth``: it is converted on the next call.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import logging
import math
import os
import re
import shutil
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from iopath.common.file_io import PathHandler, file_lock
from tqdm import tqdm

from sparse_detr.utils.processes import process_alive
from sparse_detr.utils.zip_integrity import CorruptedCheckpointError, check_zip_members

from .release_contents import ReleaseMismatch, check_release_contents

__all__ = [
    "DEFAULT_OFFICIAL_URL",
    "OFFICIAL_PREFIX",
    "OFFICIAL_RELEASES",
    "ConvertedRelease",
    "OfficialWeightsHandler",
    "OfficialWeightsUnavailable",
    "cache_root",
    "official_release_url",
    "register_official_weights_handler",
]

logger = logging.getLogger(__name__)

OFFICIAL_PREFIX = "sparse_detr://official/"
DEFAULT_OFFICIAL_URL = "https://arena.kakaocdn.net/brainrepo/sparse_detr"
# release files of the official README ("Main Results"): R-50 and Swin-T at rho 10..50 %, and R-50 with the
# SCRL-initialised backbone
OFFICIAL_RELEASES = tuple(
    f"sparse_detr_{backbone}_{percent}"
    for backbone in ("r50", "swint", "r50_scrl")
    for percent in (10, 20, 30, 40, 50)
)
_DOWNLOAD_CHUNK = 1 << 20
DEFAULT_DOWNLOAD_TIMEOUT = 1800.0  # seconds for one whole release file (about 137 MB)
_SOCKET_TIMEOUT = 60.0  # seconds without any byte from the server
_STAGING_DIR = re.compile(r"^\..+\.tmp(?P<pid>\d+)$")
_HOST_FILE = "host"  # in a staging folder: the host of the process that made it
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class OfficialWeightsUnavailable(RuntimeError):
    """An official release file could not be downloaded or converted (the message says what to do)."""


@dataclass(frozen=True)
class ConvertedRelease:
    """The cached conversion of one release file: Detectron2 weights and the LazyConfig of the model."""

    stem: str
    weights: Path
    config: Path


def cache_root() -> Path:
    """``$SPARSE_DETR_CACHE`` (default ``~/.cache/sparse_detr``)."""
    return Path(os.environ.get("SPARSE_DETR_CACHE") or Path.home() / ".cache" / "sparse_detr").expanduser()


def _cache_variable() -> str:
    """How messages name the cache: the variable and its value, or the default and how to change it."""
    if os.environ.get("SPARSE_DETR_CACHE"):
        return f"SPARSE_DETR_CACHE={os.environ['SPARSE_DETR_CACHE']}"
    return f"the default cache {cache_root()} (SPARSE_DETR_CACHE chooses another)"


def _check_base_url(base: str) -> None:
    try:
        parts = urllib.parse.urlsplit(base)
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError as error:
        problem = str(error)
    else:
        if any(c.isspace() for c in base):
            problem = "it contains white space"
        elif parts.scheme not in ("http", "https", "file"):
            problem = f"scheme {parts.scheme!r} is not http, https or file" if parts.scheme else "no scheme"
        elif parts.scheme != "file" and not parts.hostname:
            problem = "no host name"
        else:
            return
    raise OfficialWeightsUnavailable(
        f"SPARSE_DETR_OFFICIAL_URL={base!r} is not a URL of a folder of release files ({problem}); expected "
        f"e.g. {DEFAULT_OFFICIAL_URL} (the default when the variable is unset)"
    )


def official_release_url(stem: str) -> str:
    """URL of a release file: ``$SPARSE_DETR_OFFICIAL_URL`` (default: the official server)/``<stem>.pth``."""
    base = os.environ.get("SPARSE_DETR_OFFICIAL_URL") or DEFAULT_OFFICIAL_URL
    if "SPARSE_DETR_OFFICIAL_URL" in os.environ:
        _check_base_url(base)
    return f"{base.rstrip('/')}/{stem}.pth"


def download_timeout() -> float:
    """``$SPARSE_DETR_DOWNLOAD_TIMEOUT``: seconds one release download may take (default 1800)."""
    value = os.environ.get("SPARSE_DETR_DOWNLOAD_TIMEOUT")
    if not value:
        return DEFAULT_DOWNLOAD_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise OfficialWeightsUnavailable(
            f"SPARSE_DETR_DOWNLOAD_TIMEOUT={value!r} must be a positive number of seconds"
        )
    return seconds


def _check_stem(stem: str) -> None:
    if stem not in OFFICIAL_RELEASES:
        raise ValueError(
            f"{OFFICIAL_PREFIX}{stem}: no official release file is called {stem!r}; the releases are "
            f"{', '.join(OFFICIAL_RELEASES)}"
        )


def _release_dir(stem: str) -> Path:
    return cache_root() / "official" / stem


def manual_download_path(stem: str) -> Path:
    """Where a release file downloaded by hand is picked up: ``$SPARSE_DETR_CACHE/official/downloads``."""
    return cache_root() / "official" / "downloads" / f"{stem}.pth"


def _cached(stem: str) -> ConvertedRelease | None:
    directory = _release_dir(stem)
    release = ConvertedRelease(stem, directory / "model_final.pth", directory / "config.yaml")
    return release if release.weights.is_file() and release.config.is_file() else None


class _DownloadTooSlow(OfficialWeightsUnavailable):
    def __init__(self, url: str, timeout: float, received: int, expected: str | None, elapsed: float):
        super().__init__(
            f"download of {url} did not finish within {timeout:g} s (SPARSE_DETR_DOWNLOAD_TIMEOUT): "
            f"{received} of {expected or '?'} bytes received, {received / elapsed / 1024:.1f} KiB/s; the "
            "partial file was deleted. Try again later, raise SPARSE_DETR_DOWNLOAD_TIMEOUT, or download the "
            "file by other means"
        )


def _download(url: str, destination: Path) -> str:
    """Stream ``url`` into ``destination`` (complete or absent afterwards); returns the file's SHA-256.

    Logs the size the server announces and shows a progress bar (tqdm, on stderr) while downloading.
    """
    partial = destination.with_name(f".{destination.name}.part{os.getpid()}")
    digest = hashlib.sha256()
    timeout = download_timeout()
    start = time.monotonic()
    try:
        with (
            urllib.request.urlopen(url, timeout=min(_SOCKET_TIMEOUT, timeout)) as response,
            open(partial, "wb") as out,
        ):
            expected = response.headers.get("Content-Length")
            size = f"{int(expected) / 2**20:.1f} MiB" if expected is not None else "size not announced"
            logger.info(f"Downloading {url} ({size})")
            received = 0
            progress = tqdm(
                total=int(expected) if expected is not None else None, desc=destination.name, unit="B",
                unit_scale=True, unit_divisor=1024,
            )
            try:
                # read1: whatever arrived (a trickling server never fills a whole chunk), so that the
                # deadline is checked between reads
                while chunk := response.read1(_DOWNLOAD_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    progress.update(len(chunk))
                    elapsed = time.monotonic() - start
                    if elapsed > timeout:
                        raise _DownloadTooSlow(url, timeout, received, expected, elapsed)
            except http.client.IncompleteRead as error:
                received += len(error.partial)
            finally:
                progress.close()
        if expected is not None and received != int(expected):
            raise OfficialWeightsUnavailable(
                f"download of {url} is truncated: {received} of {expected} bytes; the partial file was "
                "deleted, try again"
            )
        os.replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)
    return digest.hexdigest()


def _fetch_release_file(stem: str, workdir: Path) -> tuple[Path, dict]:
    """The release file: a manual download if one is in place, else downloaded into ``workdir``."""
    manual = manual_download_path(stem)
    if manual.is_file():
        logger.info(f"Converting the manually downloaded {manual}")
        return manual, {"source": str(manual)}
    url = official_release_url(stem)
    target = workdir / f"{stem}.pth"
    logger.info(f"Downloading {url}")
    try:
        sha256 = _download(url, target)
    except _DownloadTooSlow as error:
        raise OfficialWeightsUnavailable(f"{OFFICIAL_PREFIX}{stem}: {error}; put it at {manual}") from None
    except (urllib.error.URLError, OSError) as error:
        if error.errno in _NO_SPACE:
            raise  # a full cache: named by _ensure_official_release
        raise OfficialWeightsUnavailable(
            f"{OFFICIAL_PREFIX}{stem}: cannot download {url} ({getattr(error, 'reason', error)}). Without "
            f"network access, download that file by other means and put it at {manual}; it is converted "
            "and cached on the next use (SPARSE_DETR_OFFICIAL_URL replaces the server, SPARSE_DETR_CACHE the "
            "cache directory)"
        ) from error
    except ValueError as error:  # a URL urllib cannot open
        raise OfficialWeightsUnavailable(
            f"SPARSE_DETR_OFFICIAL_URL: cannot download {url}: {error}"
        ) from error
    logger.info(f"Downloaded {url}: {target.stat().st_size} bytes, sha256 {sha256}")
    return target, {"source": url, "sha256": sha256, "bytes": target.stat().st_size}


def _convert_into_cache(stem: str, release_file: Path, provenance: dict, workdir: Path) -> ConvertedRelease:
    from detectron2.config import LazyConfig

    from sparse_detr.checkpoint import convert_official_checkpoint
    from sparse_detr.checkpoint.convert import load_official_checkpoint

    staging = workdir / "converted"
    source = provenance["source"]
    try:
        check_zip_members(release_file, source)
        checkpoint = load_official_checkpoint(str(release_file))
        check_release_contents(stem, checkpoint.args, checkpoint.state_dict, source)
        del checkpoint
        summary = convert_official_checkpoint(str(release_file), str(staging), coco_contiguous=True)
    except (CorruptedCheckpointError, ReleaseMismatch) as error:
        raise OfficialWeightsUnavailable(f"{OFFICIAL_PREFIX}{stem}: {error}") from error
    except OSError as error:
        if error.errno in _NO_SPACE:
            raise  # a full cache: named by _ensure_official_release
        raise OfficialWeightsUnavailable(f"{source} cannot be read: {error}") from error
    except Exception as error:  # any refusal of torch.load or of the converter: the file is not usable
        raise OfficialWeightsUnavailable(
            f"{source} is not a valid official checkpoint (corrupted or incomplete download?): "
            f"{type(error).__name__}: {error}"
        ) from error
    final = _release_dir(stem)
    config = LazyConfig.load(summary["config"])
    config.train.init_checkpoint = str(final / "model_final.pth")
    LazyConfig.save(config, summary["config"])
    (staging / "source.json").write_text(json.dumps({**provenance, "label_space": summary["label_space"]}))
    if final.exists():  # a stale or forced entry: replaced as a whole
        shutil.rmtree(final)
    os.replace(staging, final)
    logger.info(f"Cached the converted {stem} in {final}")
    return _cached(stem)


def _prepare_cache(directory: Path) -> None:
    """Create ``directory`` (the cache's ``official/``) or say, naming the variable, why it cannot."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as error:
        in_the_way = next(
            (p for p in (*reversed(directory.parents), directory) if p.exists() and not p.is_dir()), directory
        )
        raise OfficialWeightsUnavailable(
            f"{_cache_variable()}: {in_the_way} is a file, not a directory; the official weights are cached "
            "in folders under it. Point SPARSE_DETR_CACHE at a directory"
        ) from error
    except OSError as error:
        raise _unwritable_cache(directory, error) from error
    if not os.access(directory, os.W_OK | os.X_OK):
        raise _unwritable_cache(directory, PermissionError(errno.EACCES, "not writable"))


def _unwritable_cache(directory: Path, error: OSError) -> OfficialWeightsUnavailable:
    if error.errno in _NO_SPACE:
        return OfficialWeightsUnavailable(
            f"{_cache_variable()}: no space left in {directory} for the official weights (about 140 MB per "
            "release, twice that while converting); free space there or point SPARSE_DETR_CACHE at a larger "
            "disk"
        )
    return OfficialWeightsUnavailable(
        f"{_cache_variable()}: cannot write the official weights into {directory} "
        f"({error.strerror or error}: a read-only or foreign directory?); point SPARSE_DETR_CACHE at a "
        "writable directory"
    )


def _remove_stale_staging(official_dir: Path) -> None:
    """Delete the ``.<stem>.tmp<pid>/`` folders of downloads whose process (on this host) no longer runs."""
    host = socket.gethostname()
    for entry in official_dir.iterdir():
        match = _STAGING_DIR.match(entry.name)
        if not match or not entry.is_dir():
            continue
        host_file = entry / _HOST_FILE
        made_here = not host_file.is_file() or host_file.read_text().strip() == host
        if made_here and not process_alive(int(match["pid"])):
            shutil.rmtree(entry, ignore_errors=True)
            logger.info(f"Removed {entry}, left by a killed download")


def _ensure_official_release(stem: str, force: bool = False) -> ConvertedRelease:
    """The converted release ``stem`` from the cache, downloading and converting it first if needed.

    Args:
        stem: a name of :data:`OFFICIAL_RELEASES`, e.g. ``"sparse_detr_r50_10"``.
        force: convert again (and download again unless a manual download is in place).
    """
    _check_stem(stem)
    cached = None if force else _cached(stem)
    if cached is not None:
        return cached
    official_dir = cache_root() / "official"
    _prepare_cache(official_dir)
    try:
        with file_lock(str(official_dir / f".{stem}")):  # the processes of a multi-GPU run ask at once
            cached = None if force else _cached(stem)  # another process may have finished it meanwhile
            if cached is not None:
                return cached
            _remove_stale_staging(official_dir)
            workdir = official_dir / f".{stem}.tmp{os.getpid()}"
            shutil.rmtree(workdir, ignore_errors=True)
            workdir.mkdir(parents=True)
            try:
                (workdir / _HOST_FILE).write_text(socket.gethostname())
                release_file, provenance = _fetch_release_file(stem, workdir)
                return _convert_into_cache(stem, release_file, provenance, workdir)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
    except OSError as error:
        if error.errno in _NO_SPACE or isinstance(error, PermissionError) or error.errno == errno.EROFS:
            raise _unwritable_cache(official_dir, error) from error
        raise


class OfficialWeightsHandler(PathHandler):
    """Resolves ``sparse_detr://official/<stem>`` to the cached converted checkpoint (see the module doc)."""

    PREFIX = "sparse_detr://"

    def _get_supported_prefixes(self) -> list[str]:
        return [self.PREFIX]

    def _stem(self, path: str) -> str:
        if not path.startswith(OFFICIAL_PREFIX):
            raise ValueError(f"{path}: sparse_detr:// paths are {OFFICIAL_PREFIX}<release file stem>")
        stem = path[len(OFFICIAL_PREFIX):]
        return stem[: -len(".pth")] if stem.endswith(".pth") else stem

    def _get_local_path(self, path: str, force: bool = False, **kwargs) -> str:
        self._check_kwargs(kwargs)
        return str(_ensure_official_release(self._stem(path), force=force).weights)

    def _open(self, path: str, mode: str = "r", buffering: int = -1, **kwargs):
        self._check_kwargs(kwargs)
        if any(flag in mode for flag in "wax+"):
            raise ValueError(f"{path}: official weights are read-only (mode {mode!r})")
        return open(self._get_local_path(path), mode, buffering)


def register_official_weights_handler() -> None:
    """Register the handler on Detectron2's ``PathManager`` (``import sparse_detr`` does it)."""
    from detectron2.utils.file_io import PathManager

    PathManager.register_handler(OfficialWeightsHandler(), allow_override=True)
