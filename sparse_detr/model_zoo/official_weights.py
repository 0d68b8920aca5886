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

A download whose size differs from the server's ``Content-Length``, whose zip members fail their CRC-32, or
that ``torch.load`` or the converter refuses, is deleted and reported; nothing is cached unless the conversion
succeeded (files are written under a temporary name and moved into place). Without network access, download
the release file by other means and put it at ``$SPARSE_DETR_CACHE/official/downloads/<stem>.pth``: it is
converted on the next call.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from iopath.common.file_io import PathHandler, file_lock
from tqdm import tqdm

__all__ = [
    "DEFAULT_OFFICIAL_URL",
    "OFFICIAL_PREFIX",
    "OFFICIAL_RELEASES",
    "ConvertedRelease",
    "OfficialWeightsHandler",
    "OfficialWeightsUnavailable",
    "cache_root",
    "ensure_official_release",
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


def official_release_url(stem: str) -> str:
    """URL of a release file: ``$SPARSE_DETR_OFFICIAL_URL`` (default: the official server)/``<stem>.pth``."""
    base = os.environ.get("SPARSE_DETR_OFFICIAL_URL") or DEFAULT_OFFICIAL_URL
    return f"{base.rstrip('/')}/{stem}.pth"


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


def _download(url: str, destination: Path) -> str:
    """Stream ``url`` into ``destination`` (complete or absent afterwards); returns the file's SHA-256.

    Logs the size the server announces and shows a progress bar (tqdm, on stderr) while downloading.
    """
    partial = destination.with_name(f".{destination.name}.part{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            expected = response.headers.get("Content-Length")
            size = f"{int(expected) / 2**20:.1f} MiB" if expected is not None else "size not announced"
            logger.info(f"Downloading {url} ({size})")
            received = 0
            progress = tqdm(
                total=int(expected) if expected is not None else None, desc=destination.name, unit="B",
                unit_scale=True, unit_divisor=1024,
            )
            try:
                while chunk := response.read(_DOWNLOAD_CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    progress.update(len(chunk))
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
    except (urllib.error.URLError, OSError) as error:
        raise OfficialWeightsUnavailable(
            f"{OFFICIAL_PREFIX}{stem}: cannot download {url} ({getattr(error, 'reason', error)}). Without "
            f"network access, download that file by other means and put it at {manual}; it is converted "
            "and cached on the next use (SPARSE_DETR_OFFICIAL_URL replaces the server, SPARSE_DETR_CACHE the "
            "cache directory)"
        ) from error
    logger.info(f"Downloaded {url}: {target.stat().st_size} bytes, sha256 {sha256}")
    return target, {"source": url, "sha256": sha256, "bytes": target.stat().st_size}


def _check_archive(path: Path, source: str) -> None:
    """The CRC-32 of every member of a zip-format checkpoint (``torch.load`` does not check them)."""
    if not zipfile.is_zipfile(path):
        return  # a legacy (pre-zip) torch file: only the converter's validation applies
    with zipfile.ZipFile(path) as archive:
        corrupted = archive.testzip()
    if corrupted is not None:
        raise OfficialWeightsUnavailable(
            f"{source} is corrupted: the checksum (CRC-32) of its member {corrupted!r} does not match"
        )


def _convert_into_cache(stem: str, release_file: Path, provenance: dict, workdir: Path) -> ConvertedRelease:
    from detectron2.config import LazyConfig

    from sparse_detr.checkpoint import convert_official_checkpoint

    staging = workdir / "converted"
    _check_archive(release_file, provenance["source"])
    try:
        summary = convert_official_checkpoint(str(release_file), str(staging), coco_contiguous=True)
    except Exception as error:  # any refusal of torch.load or of the converter: the file is not usable
        raise OfficialWeightsUnavailable(
            f"{provenance['source']} is not a valid official checkpoint (corrupted or incomplete download?): "
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


def ensure_official_release(stem: str, force: bool = False) -> ConvertedRelease:
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
    with file_lock(str(official_dir / f".{stem}")):  # the processes of a multi-GPU run ask at once
        cached = None if force else _cached(stem)  # another process may have finished it meanwhile
        if cached is not None:
            return cached
        workdir = official_dir / f".{stem}.tmp{os.getpid()}"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        try:
            release_file, provenance = _fetch_release_file(stem, workdir)
            return _convert_into_cache(stem, release_file, provenance, workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


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
        return str(ensure_official_release(self._stem(path), force=force).weights)

    def _open(self, path: str, mode: str = "r", buffering: int = -1, **kwargs):
        self._check_kwargs(kwargs)
        if any(flag in mode for flag in "wax+"):
            raise ValueError(f"{path}: official weights are read-only (mode {mode!r})")
        return open(self._get_local_path(path), mode, buffering)


def register_official_weights_handler() -> None:
    """Register the handler on Detectron2's ``PathManager`` (``import sparse_detr`` does it)."""
    from detectron2.utils.file_io import PathManager

    PathManager.register_handler(OfficialWeightsHandler(), allow_override=True)
