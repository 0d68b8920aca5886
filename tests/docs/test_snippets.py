"""Every Python and shell snippet of README.md and docs/*.md runs, through Sybil, in a sandbox folder.

Python blocks run in one namespace per page, in order; a Python block whose first line is ``# NAME.py``
is a file the page asks the reader to save: it is written into the sandbox and loaded as a LazyConfig.
``bash`` blocks run with ``bash -euo pipefail`` in the sandbox. ``<!-- skip: next "reason" -->`` before a
block marks what cannot run here (an install, days of GPU training, TensorRT); the reason is shown.

The sandbox stands in for what the snippets need from outside: the official weights are served from a
prepared cache (``$SPARSE_DETR_CACHE``, the network switched off), the quickstart's ``model_final.pth`` by
weights of its architecture, ``photo.jpg`` is scikit-image's ``coffee``, COCO's val2017 and the reader's own
data are small COCO-format sets of scikit-image photos.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from unittest import SkipTest

import numpy as np
import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from PIL import Image
from sybil import Sybil
from sybil.parsers.markdown import CodeBlockParser, SkipParser

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINKED_FROM_SANDBOX = ("train_net.py", "configs", "projects", "benchmarks", "tools")
OFFICIAL_STAND_INS = {"sparse_detr_r50_10": "sparse_detr_r50_rho0.1_50ep"}
QUICKSTART_WEIGHTS = "output/quickstart/model_final.pth"  # what `make quickstart` leaves behind
FILE_HEADER = re.compile(r"#\s*(?P<name>[\w.-]+\.py)\n")

pytestmark = pytest.mark.slow


def _photos() -> list[np.ndarray]:
    from skimage import data

    return [data.coffee(), data.astronaut(), data.chelsea(), data.rocket()]


def _coco_json(path: Path, image_root: Path, photos: list[np.ndarray], categories: list[dict], size: int):
    """A COCO-format set of ``photos`` (resized to ``size`` px wide), one box per category id in turn."""
    image_root.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index, photo in enumerate(photos):
        picture = Image.fromarray(photo)
        picture = picture.resize((size, round(size * picture.height / picture.width)))
        name = f"{path.stem}_{index}.jpg"
        picture.save(image_root / name)
        images.append({"id": index + 1, "file_name": name, "width": picture.width, "height": picture.height})
        w, h = picture.width, picture.height
        category = categories[index % len(categories)]["id"]
        annotations.append({"id": index + 1, "image_id": index + 1, "category_id": category,
                            "bbox": [w * 0.25, h * 0.25, w * 0.5, h * 0.5], "area": w * h / 4, "iscrowd": 0})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))


def _trained_stand_in(config_name: str, path: Path):
    """Weights for the model-zoo config: its model with the class heads moved off their initial values (the
    predictors refuse untrained heads); the detections mean nothing. Returns the config."""
    from sparse_detr import model_zoo

    cfg = model_zoo.get_config(config_name)
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "class_head" in name:
                parameter.add_(torch.randn_like(parameter))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict()}, path)
    return cfg


def _official_stand_in(cache: Path, stem: str, config_name: str) -> None:
    """A converted release in the cache, as ``sparse_detr://official/<stem>`` leaves it after a download."""
    weights = cache / "official" / stem / "model_final.pth"
    cfg = _trained_stand_in(config_name, weights)
    cfg.train.init_checkpoint = str(weights)
    LazyConfig.save(cfg, str(weights.with_name("config.yaml")))


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory) -> tuple[Path, dict]:
    """(folder, environment) in which the pages' snippets run."""
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    root = tmp_path_factory.mktemp("docs_sandbox")
    for name in LINKED_FROM_SANDBOX:
        (root / name).symlink_to(ROOT / name)
    photos = _photos()
    Image.fromarray(photos[0]).save(root / "photo.jpg")
    coco = [{"id": c["id"], "name": c["name"]} for c in COCO_CATEGORIES if c["isthing"]]
    datasets = root / "datasets"
    _coco_json(datasets / "coco/annotations/instances_val2017.json", datasets / "coco/val2017", photos[:2],
               coco, size=320)
    mine = [{"id": i, "name": n} for i, n in ((3, "cup"), (7, "person"), (9, "cat"))]
    _coco_json(datasets / "my/train.json", datasets / "my/images", photos, mine, size=160)
    _coco_json(datasets / "my/val.json", datasets / "my/images", photos[:2], mine, size=160)
    for stem, config_name in OFFICIAL_STAND_INS.items():
        _official_stand_in(root / "cache", stem, config_name)
    _trained_stand_in("quickstart_shapes", root / QUICKSTART_WEIGHTS)
    env = {
        "SPARSE_DETR_CACHE": str(root / "cache"),
        "SPARSE_DETR_OFFICIAL_URL": "http://127.0.0.1:9/offline",  # nothing listens: no download
        "DETECTRON2_DATASETS": str(datasets),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
    }
    return root, env


def _evaluate_python(example) -> None:
    source = str(example.parsed)
    header = FILE_HEADER.match(source)
    if header:  # a file to save: write it where the page's commands expect it, and load it
        path = Path(header["name"])
        path.write_text(source)
        LazyConfig.load(str(path))
        return
    code = compile(source, f"{example.path}:{example.line}", "exec")
    exec(code, example.namespace)


def _bash_evaluator(env: dict):
    def evaluate(example) -> None:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", str(example.parsed)], env={**os.environ, **env},
            capture_output=True, text=True, timeout=900,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr)[-4000:]
            raise AssertionError(f"exit status {result.returncode}:\n{output}")

    return evaluate


@pytest.mark.timeout(1800)  # a page runs several models end to end
@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_snippet_of_the_page_runs(page, sandbox, monkeypatch):
    root, env = sandbox
    monkeypatch.chdir(root)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    sybil = Sybil(parsers=[
        CodeBlockParser(language="python", evaluator=_evaluate_python),
        CodeBlockParser(language="bash", evaluator=_bash_evaluator(env)),
        SkipParser(),
    ])
    document = sybil.parse(page)
    ran, skipped = 0, []
    for example in document:
        try:
            example.evaluate()
        except SkipTest as reason:
            skipped.append(f"line {example.line}: {reason}")
            continue
        except Exception as error:
            where = f"{page.relative_to(ROOT)}, snippet at line {example.line}"
            raise AssertionError(f"{where}: {error}") from error
        ran += isinstance(example.parsed, str)  # a code block, not a skip directive
    print(f"{page.relative_to(ROOT)}: {ran} snippets ran; skipped: {skipped or 'none'}")
