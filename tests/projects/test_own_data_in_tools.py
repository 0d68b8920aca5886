"""A dataset listed only in a config's ``datasets.coco_json`` works in every tool of the project, and the
tools show its class names: demo.py, visualize_tokens.py --dataset, draw_predictions.py --dataset,
benchmarks/benchmark.py --dataset."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from tests.helpers.project_scripts import TINY_CONFIG, load_script

CLASSES = ("kettle", "teapot")

OWN_DATA_CONFIG = """\
from detectron2.config import LazyConfig

_tiny = LazyConfig.load({tiny!r})
model, dataloader, train = _tiny.model, _tiny.dataloader, _tiny.train
datasets = dict(coco_json=[dict(name={name!r}, json_file={json_file!r}, image_root={image_root!r})])
dataloader.test.dataset.names = {name!r}
model.heads.num_classes = 2
"""


@pytest.fixture
def own_config(tmp_path):
    """(config file, dataset name): 2 images of a 2-category COCO json (ids 5 and 11)."""
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for index in range(2):
        Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)).save(images_dir / f"{index}.png")
        images.append({"id": index + 1, "file_name": f"{index}.png", "height": 80, "width": 96})
        annotations.append({"id": index + 1, "image_id": index + 1, "bbox": [10, 10, 30, 30],
                            "category_id": (5, 11)[index], "iscrowd": 0, "area": 900.0})
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": 5, "name": CLASSES[0]}, {"id": 11, "name": CLASSES[1]}]}
    (tmp_path / "own_val.json").write_text(json.dumps(coco))
    name = f"own_val_{tmp_path.name}"
    config = tmp_path / "own_data.py"
    config.write_text(OWN_DATA_CONFIG.format(
        tiny=TINY_CONFIG, name=name, json_file=str(tmp_path / "own_val.json"), image_root=str(images_dir)
    ))
    yield str(config), name
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_demo_labels_and_logs_detections_with_the_dataset_class_names(own_config, tmp_path, stand_in_weights):
    config, _ = own_config
    demo = load_script("demo")
    output = tmp_path / "demo"
    image = str(tmp_path / "images" / "0.png")
    code = demo.main(["--config-file", config, "--weights", stand_in_weights(config), "--input", image,
                      "--output", str(output), "--confidence-threshold", "0"])
    assert code == 0
    log = (output / "log.txt").read_text()
    ((total, summary),) = re.findall(r"0\.png: (\d+) detection\(s\) with score >= 0\.0: (.*)", log)
    counts = {name: int(count) for count, name in re.findall(r"(\d+) (\w+)", summary)}
    assert set(counts) <= set(CLASSES) and sum(counts.values()) == int(total) > 0


def test_visualize_tokens_takes_images_from_the_config_dataset(own_config, tmp_path, monkeypatch,
                                                                stand_in_weights):
    config, name = own_config
    visualize = load_script("visualize_tokens")
    shown = []
    monkeypatch.setattr(visualize, "draw_figure", lambda image, views, path, top_k, names, threshold:
                        shown.append(names))
    visualize.main(["--config-file", config, "--weights", stand_in_weights(config), "--dataset", name,
                    "--num-images", "2", "--output", str(tmp_path / "figures")])
    assert shown == [[list(CLASSES)]] * 2  # the class names the figure labels boxes with


def test_draw_predictions_and_benchmark_read_the_config_dataset(own_config, tmp_path, stand_in_weights):
    config, name = own_config
    draw = load_script("draw_predictions")
    grid = tmp_path / "grid.png"
    draw.main(["--config-file", config, "--weights", stand_in_weights(config), "--dataset", name,
               "--output", str(grid), "--num-images", "2"])
    assert grid.is_file()
    assert MetadataCatalog.get(name).thing_classes == list(CLASSES)  # what the grid's Visualizer labels with
    benchmark = load_script("benchmark", folder="benchmarks")
    json_path = tmp_path / "bench.json"
    benchmark.main(["--flops", "--config-file", config, "--dataset", name, "--num-images", "1",
                    "--json", str(json_path)])
    assert json.loads(json_path.read_text())["rows"][0]["gflops_total"] > 0
