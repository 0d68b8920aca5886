"""``sparse_detr://official/<stem>``: download -> convert -> cache -> offline reuse, and bad downloads.

A release-like official checkpoint (``{"model", "args", "epoch"}`` as the official ``main.py`` saves it) is
built from the official fixture and served from a local HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import http.server
import threading
from pathlib import Path

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.utils.file_io import PathManager

import sparse_detr  # noqa: F401  (registers the handler)
from sparse_detr import model_zoo
from sparse_detr.checkpoint import COCO_CONTIGUOUS_CATEGORY_IDS
from sparse_detr.model_zoo.official_weights import OfficialWeightsUnavailable, manual_download_path

STEM = "sparse_detr_r50_10"
NAME = f"sparse_detr://official/{STEM}"


class _Server:
    """Serves ``files`` (name -> bytes); ``truncate`` sends only half of each body (full Content-Length)."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.truncate = False
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


@pytest.fixture(scope="module")
def release_bytes(official, tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("release") / f"{STEM}.pth"
    torch.save(
        {"model": official["state_dict"], "args": argparse.Namespace(**official["args"]), "epoch": 49}, path
    )
    return path.read_bytes()


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
    assert not trained.training and trained.encoder.num_layers == official["args"]["enc_layers"]
    assert torch.equal(trained.heads.class_heads[0].weight, expected)


def test_get_config_trained_points_at_the_official_weights():
    cfg = model_zoo.get_config("sparse_detr_swint_rho0.3_50ep", trained=True)
    assert cfg.train.init_checkpoint == "sparse_detr://official/sparse_detr_swint_30"
    with pytest.raises(ValueError, match="no official checkpoint was trained with 'quickstart_shapes'"):
        model_zoo.get_config("quickstart_shapes", trained=True)


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


def test_a_file_the_converter_refuses_is_not_cached(server, tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"model": {"weight": torch.zeros(2)}, "args": {"backbone": "resnet18"}}, bad)
    server.serve(STEM, bad.read_bytes())
    with pytest.raises(OfficialWeightsUnavailable, match=r"not a valid official checkpoint.*resnet18"):
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
    url = model_zoo.official_checkpoint_url("sparse_detr_r50_rho0.2_50ep")
    assert url.endswith("/sparse_detr_r50_20.pth")


@pytest.mark.slow  # an R-50 at the official 800-pixel test size
def test_demo_runs_an_official_model_by_name(server, release_bytes, tmp_path):
    import numpy as np
    from PIL import Image
    from project_scripts import load_script

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
