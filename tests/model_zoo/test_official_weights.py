"""``sparse_detr://official/<stem>``: download -> convert -> cache -> offline reuse, and bad downloads.

A release-like official checkpoint (``{"model", "args", "epoch"}`` as the official ``main.py`` saves it) is
built from the official fixture, its layer stacks repeated to the releases' 6 encoder + 6 decoder layers, and
served from a local HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import errno
import http.server
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.utils.file_io import PathManager

import sparse_detr  # noqa: F401  (registers the handler)
from sparse_detr import model_zoo
from sparse_detr.checkpoint.official_config import COCO_CONTIGUOUS_CATEGORY_IDS
from sparse_detr.model_zoo.official_weights import OfficialWeightsUnavailable, manual_download_path

STEM = "sparse_detr_r50_10"
NAME = f"sparse_detr://official/{STEM}"


class _Server:
    """Serves ``files`` (name -> bytes); ``truncate`` sends only half of each body (full Content-Length),
    ``trickle`` sends it 64 bytes every 20 ms."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.truncate = False
        self.trickle = False
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = server.files.get(self.path.lstrip("/"))
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.trickle:
                    try:
                        for start in range(0, len(body), 64):
                            self.wfile.write(body[start : start + 64])
                            self.wfile.flush()
                            time.sleep(0.02)
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # the client gave up
                    return
                self.wfile.write(body[: len(body) // 2] if server.truncate else body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/releases"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, stem: str, body: bytes) -> None:
        self.files[f"releases/{stem}.pth"] = body

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# official layer stacks -> how many entries a model of (encoder, decoder) layers has (two-stage, box
# refinement, encoder auxiliary heads: decoder + 1 + encoder - 1 class / box heads)
_STACK_SIZES = {
    "transformer.encoder.layers": lambda enc, dec: enc,
    "transformer.decoder.layers": lambda enc, dec: dec,
    "transformer.encoder.class_embed": lambda enc, dec: enc - 1,
    "transformer.encoder.bbox_embed": lambda enc, dec: enc - 1,
    "transformer.decoder.class_embed": lambda enc, dec: enc + dec,
    "transformer.decoder.bbox_embed": lambda enc, dec: enc + dec,
    "class_embed": lambda enc, dec: enc + dec,
    "bbox_embed": lambda enc, dec: enc + dec,
}


def release_like(official, enc_layers: int = 6, dec_layers: int = 6, weights_layers=None, **args) -> bytes:
    """The fixture as a release file of ``enc_layers`` + ``dec_layers`` layers (repeating its last layers);
    ``weights_layers`` gives the weights other layer counts than the saved args; ``args`` override others."""
    enc, dec = weights_layers or (enc_layers, dec_layers)
    state: dict = {}
    stacks = "|".join(map(re.escape, _STACK_SIZES))
    pattern = re.compile(rf"^(?P<stack>{stacks})\.(?P<i>\d+)\.(?P<rest>.+)$")
    by_stack: dict = {}
    for key, value in official["state_dict"].items():
        match = pattern.match(key)
        if match is None:
            state[key] = value
        else:
            by_stack.setdefault(match["stack"], {}).setdefault(int(match["i"]), {})[match["rest"]] = value
    for stack, entries in by_stack.items():
        for index in range(_STACK_SIZES[stack](enc, dec)):
            for rest, value in entries[min(index, max(entries))].items():
                state[f"{stack}.{index}.{rest}"] = value
    saved_args = {**official["args"], "enc_layers": enc_layers, "dec_layers": dec_layers, **args}
    buffer = __import__("io").BytesIO()
    torch.save({"model": state, "args": argparse.Namespace(**saved_args), "epoch": 49}, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def release_bytes(official) -> bytes:
    return release_like(official)


@pytest.fixture
def server(monkeypatch, tmp_path):
    served = _Server()
    monkeypatch.setenv("SPARSE_DETR_OFFICIAL_URL", served.url)
    monkeypatch.setenv("SPARSE_DETR_CACHE", str(tmp_path / "cache"))
    yield served
    served.close()


def _cache_entries(tmp_path: Path) -> list[str]:
    root = tmp_path / "cache" / "official"
    return sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock")) if root.exists() else []


def _offline(monkeypatch):
    # a port nothing listens on: any download attempt fails
    monkeypatch.setenv("SPARSE_DETR_OFFICIAL_URL", "http://127.0.0.1:9/releases")


def test_download_convert_cache_then_offline_reuse(server, release_bytes, official, tmp_path, monkeypatch):
    server.serve(STEM, release_bytes)
    local = PathManager.get_local_path(NAME)
    assert server.requests == [f"/releases/{STEM}.pth"]
    assert Path(local) == tmp_path / "cache" / "official" / STEM / "model_final.pth"
    assert _cache_entries(tmp_path) == [STEM]  # the download itself and the staging files are gone

    # the cached config rebuilds the official architecture and points at the cached weights
    config = LazyConfig.load(str(Path(local).with_name("config.yaml")))
    assert config.train.init_checkpoint == local
    model = instantiate(config.model)
    DetectionCheckpointer(model).load(NAME)  # the way train_net / the predictors read weights
    expected = official["state_dict"]["class_embed.0.weight"][COCO_CONTIGUOUS_CATEGORY_IDS]
    assert torch.equal(model.heads.class_heads[0].weight, expected)

    _offline(monkeypatch)
    assert PathManager.get_local_path(NAME) == local
    assert len(server.requests) == 1

    # model_zoo.get(trained=True): the converted config, every weight loaded, from the cache
    trained = model_zoo.get("sparse_detr_r50_rho0.1_50ep", trained=True, device="cpu")
    assert not trained.training and trained.encoder.num_layers == trained.decoder.num_layers == 6
    assert torch.equal(trained.heads.class_heads[0].weight, expected)


def test_configs_without_official_weights_are_refused_by_name():
    with pytest.raises(ValueError, match="no official checkpoint was trained with 'quickstart_shapes'"):
        model_zoo.get("quickstart_shapes", trained=True)


def test_truncated_download_is_removed_and_not_cached(server, release_bytes, tmp_path):
    server.serve(STEM, release_bytes)
    server.truncate = True
    truncated = rf"{STEM}\.pth is truncated: \d+ of {len(release_bytes)}"
    with pytest.raises(OfficialWeightsUnavailable, match=truncated):
        PathManager.get_local_path(NAME)
    assert _cache_entries(tmp_path) == []
    server.truncate = False
    assert Path(PathManager.get_local_path(NAME)).is_file()  # nothing stale was left to trip over


def test_corrupted_download_is_detected_by_its_checksum(server, release_bytes, tmp_path):
    corrupted = bytearray(release_bytes)
    middle = len(corrupted) // 2  # inside a tensor's data: torch.load would not notice
    corrupted[middle : middle + 4] = bytes(b ^ 0xFF for b in corrupted[middle : middle + 4])
    server.serve(STEM, bytes(corrupted))
    with pytest.raises(OfficialWeightsUnavailable, match=r"is corrupted: the checksum \(CRC-32\)"):
        PathManager.get_local_path(NAME)
    assert _cache_entries(tmp_path) == []


def test_a_file_the_converter_refuses_is_not_cached(server, official, tmp_path):
    server.serve(STEM, release_like(official, masks=True))  # the release's architecture, plus a mask head
    with pytest.raises(OfficialWeightsUnavailable, match=r"not a valid official checkpoint.*masks=True"):
        PathManager.get_local_path(NAME)
    assert _cache_entries(tmp_path) == []


def test_offline_and_uncached_names_the_url_and_the_manual_path(server, release_bytes, tmp_path, monkeypatch):
    _offline(monkeypatch)
    manual = manual_download_path(STEM)
    message = rf"cannot download http://127\.0\.0\.1:9/releases/{STEM}\.pth .*put it at {manual}"
    with pytest.raises(OfficialWeightsUnavailable, match=message):
        PathManager.get_local_path(NAME)
    assert _cache_entries(tmp_path) == []

    manual.parent.mkdir(parents=True)
    manual.write_bytes(release_bytes)
    local = PathManager.get_local_path(NAME)  # converted from the manual download, no network
    assert Path(local).is_file() and manual.is_file()
    assert server.requests == []


def test_unknown_release_names_are_refused_with_the_list():
    with pytest.raises(ValueError, match="sparse_detr_r50_scrl_10"):
        PathManager.get_local_path("sparse_detr://official/sparse_detr_r50_60")
    url = model_zoo.get_checkpoint_url("sparse_detr_r50_rho0.2_50ep")
    assert url.endswith("/sparse_detr_r50_20.pth")


@pytest.mark.slow  # an R-50 at the official 800-pixel test size
def test_demo_runs_an_official_model_by_name(server, release_bytes, tmp_path):
    import numpy as np
    from PIL import Image

    from tests.helpers.project_scripts import load_script

    server.serve(STEM, release_bytes)
    config = Path(PathManager.get_local_path(NAME)).with_name("config.yaml")  # the official architecture
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(image)
    output = tmp_path / "demo"
    demo = load_script("demo")
    arguments = ["--config-file", str(config), "--weights", NAME, "--input", str(image),
                 "--output", str(output), "--confidence-threshold", "0"]
    assert demo.main(arguments) == 0
    assert (output / "photo.png").is_file()
    assert "photo.png: 100 detection(s) with score >= 0.0" in (output / "log.txt").read_text()
    assert len(server.requests) == 1  # the demo used the cache


@pytest.mark.parametrize("stem, variant, problem", [
    ("sparse_detr_swint_10", {}, r"backbone resnet50 \(the name promises swin-t\)"),
    ("sparse_detr_r50_10", {"rho": 0.3}, r"rho 0\.3 \(the name promises 0\.1\)"),
    ("sparse_detr_r50_scrl_10", {"enc_layers": 2, "dec_layers": 2},
     r"encoder layers 2 \(the name promises 6\); decoder layers 2"),
    ("sparse_detr_r50_20", {"rho": 0.2, "weights_layers": (2, 2)},
     r"encoder layers 2 \(the name promises 6\).*its args say enc_layers=6 but its weights hold 2"),
])
def test_a_release_file_of_another_architecture_is_refused_by_name(server, official, tmp_path, stem, variant,
                                                                   problem):
    server.serve(stem, release_like(official, **variant))
    expected = rf"{stem}\.pth is not the release {stem} .*{problem}.*Nothing was cached"
    with pytest.raises(OfficialWeightsUnavailable, match=expected):
        PathManager.get_local_path(f"sparse_detr://official/{stem}")
    assert _cache_entries(tmp_path) == []


def test_a_trickling_download_stops_at_its_deadline(server, release_bytes, tmp_path, monkeypatch):
    server.serve(STEM, release_bytes)
    server.trickle = True
    monkeypatch.setenv("SPARSE_DETR_DOWNLOAD_TIMEOUT", "1")
    start = time.monotonic()
    message = rf"not finish within 1 s \(SPARSE_DETR_DOWNLOAD_TIMEOUT\): \d+ of {len(release_bytes)} bytes"
    with pytest.raises(OfficialWeightsUnavailable, match=message):
        PathManager.get_local_path(NAME)
    assert time.monotonic() - start < 10
    assert _cache_entries(tmp_path) == []
    monkeypatch.setenv("SPARSE_DETR_DOWNLOAD_TIMEOUT", "soon")
    with pytest.raises(OfficialWeightsUnavailable, match="SPARSE_DETR_DOWNLOAD_TIMEOUT='soon' must be"):
        PathManager.get_local_path(NAME)


def test_staging_folders_of_killed_downloads_are_removed_at_the_next_call(server, release_bytes, tmp_path):
    killed = subprocess.Popen([sys.executable, "-c", "pass"])
    killed.wait()
    official_dir = tmp_path / "cache" / "official"
    stale = official_dir / f".{STEM}.tmp{killed.pid}"
    stale.mkdir(parents=True)
    (stale / f".{STEM}.pth.part{killed.pid}").write_bytes(release_bytes[:1000])
    other_release = official_dir / f".sparse_detr_swint_10.tmp{killed.pid + 1000000}"
    other_release.mkdir()
    server.serve(STEM, release_bytes)
    PathManager.get_local_path(NAME)
    assert not stale.exists() and not other_release.exists()
    assert _cache_entries(tmp_path) == [STEM]


@pytest.mark.parametrize("fault", ["a file", "not writable", "full"])
def test_a_cache_that_cannot_be_written_is_named_with_its_variable(server, release_bytes, tmp_path,
                                                                   monkeypatch, fault):
    server.serve(STEM, release_bytes)
    if fault == "a file":
        (tmp_path / "cache").write_text("not a folder")
        expected = rf"SPARSE_DETR_CACHE={tmp_path / 'cache'}: {tmp_path / 'cache'} is a file, not a directory"
    elif fault == "not writable":
        monkeypatch.setenv("SPARSE_DETR_CACHE", "/sys/sparse_detr_cache")  # sysfs: nobody creates folders
        expected = r"SPARSE_DETR_CACHE=/sys/sparse_detr_cache: cannot write the official weights into"
    else:
        def full_disk(*args, **kwargs):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(torch, "save", full_disk)
        cache = tmp_path / "cache"
        expected = rf"SPARSE_DETR_CACHE={cache}: no space left in {cache / 'official'}"
    with pytest.raises(OfficialWeightsUnavailable, match=expected):
        PathManager.get_local_path(NAME)
    if fault == "full":
        assert _cache_entries(tmp_path) == []


@pytest.mark.parametrize("url", ["arena.kakaocdn.net/brainrepo/sparse_detr", "http:///releases",
                                 "ftp://example.org/releases", "http://example.org:port/releases",
                                 "http://example.org/my releases"])
def test_a_malformed_release_url_is_named_with_its_variable(server, url, monkeypatch):
    monkeypatch.setenv("SPARSE_DETR_OFFICIAL_URL", url)
    expected = rf"SPARSE_DETR_OFFICIAL_URL='{re.escape(url)}' is not a URL"
    with pytest.raises(OfficialWeightsUnavailable, match=expected):
        PathManager.get_local_path(NAME)
    assert server.requests == []


def test_download_shows_its_size_and_a_progress_bar(server, tmp_path, capsys, caplog):
    from sparse_detr.model_zoo.official_weights import _download

    server.serve(STEM, bytes(3 * 2**20 + 12345))
    destination = tmp_path / f"{STEM}.pth"
    with caplog.at_level("INFO", logger="sparse_detr.model_zoo"):
        _download(f"{server.url}/{STEM}.pth", destination)
    assert destination.stat().st_size == 3 * 2**20 + 12345
    assert f"Downloading {server.url}/{STEM}.pth (3.0 MiB)" in caplog.text
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()[-1]
    assert bar.startswith(f"{STEM}.pth: 100%") and "3.01M/3.01M" in bar
