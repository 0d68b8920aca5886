"""One registration of ``datasets.coco_json`` for every tool: the config's dataset node (what Detectron2's
own trainers instantiate), ``register_config_datasets`` for apps, and the class names shown by the tools."""

import json

import numpy as np
import pytest
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from sparse_detr.data.annotation_checks import AnnotationError
from sparse_detr.data.catalog import class_names, register_config_datasets

TINY_CONFIG = "tests/configs/tiny_shapes.py"


@pytest.fixture
def own_config(tmp_path):
    """The tiny config on a 2-category COCO json (ids 4 and 9) listed in ``datasets.coco_json`` only."""
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(tmp_path / "im.png")
    coco = {
        "images": [{"id": 1, "file_name": "im.png", "height": 64, "width": 64}],
        "annotations": [
            {"id": 1, "image_id": 1, "bbox": [4, 4, 20, 20], "category_id": 9, "iscrowd": 0, "area": 400.0}
        ],
        "categories": [{"id": 4, "name": "kettle"}, {"id": 9, "name": "teapot"}],
    }
    (tmp_path / "own.json").write_text(json.dumps(coco))
    cfg = LazyConfig.load(TINY_CONFIG)
    name = f"unit_own_{tmp_path.name}"
    cfg.datasets = {"coco_json": [{"name": name, "json_file": str(tmp_path / "own.json"),
                                   "image_root": str(tmp_path)}]}
    cfg.dataloader.test.dataset.names = name
    cfg.model.heads.num_classes = 2
    yield cfg, name
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_the_dataset_node_registers_the_config_datasets_and_checks_num_classes(own_config):
    cfg, name = own_config
    assert name not in DatasetCatalog.list()
    dicts = instantiate(cfg.dataloader.test.dataset)  # what any trainer does first
    assert [a["category_id"] for a in dicts[0]["annotations"]] == [1]
    assert MetadataCatalog.get(name).thing_classes == ["kettle", "teapot"]
    for wrong in (1, 10):  # fewer classes than categories, and DETR's max id + 1
        cfg.model.heads.num_classes = wrong
        with pytest.raises(AnnotationError, match="set model.heads.num_classes=2"):
            instantiate(cfg.dataloader.test.dataset)


def test_apps_register_with_one_call_and_get_the_class_names(own_config):
    cfg, name = own_config
    register_config_datasets(cfg)
    assert name in DatasetCatalog.list()
    register_config_datasets(cfg)  # again: the same files, nothing to do
    assert class_names(cfg, 2) == ["kettle", "teapot"]  # read from the json when needed


def test_class_names_fall_back_to_coco_names_or_numbers():
    cfg = LazyConfig.load(TINY_CONFIG)
    del cfg.dataloader
    assert class_names(cfg, 91)[1] == "person" and class_names(cfg, 80)[0] == "person"
    assert class_names(cfg, 3) == ["0", "1", "2"]
