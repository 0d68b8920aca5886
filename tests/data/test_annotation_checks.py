"""Annotations are checked before a model is built: broken files named, dropped boxes counted, labels."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from PIL import Image

from sparse_detr.data.annotation_checks import AnnotationError, check_dataset_annotations

ROOT = Path(__file__).resolve().parents[2]


def _coco(tmp_path, boxes, categories=("a", "b", "c")):
    Image.fromarray(np.zeros((40, 60, 3), dtype=np.uint8)).save(tmp_path / "im.png")
    return {
        "images": [{"id": 1, "file_name": "im.png", "height": 40, "width": 60}],
        "annotations": [
            {"id": i + 1, "image_id": 1, "bbox": box, "category_id": 1, "iscrowd": 0, "area": 1.0}
            for i, box in enumerate(boxes)
        ],
        "categories": [{"id": i + 1, "name": n} for i, n in enumerate(categories)],
    }


@pytest.fixture
def register(tmp_path):
    names = []

    def register(content, name) -> str:
        path = tmp_path / f"{name}.json"
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        register_coco_instances(name, {}, str(path), str(tmp_path))
        names.append(name)
        return name

    yield register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_dropped_boxes_are_counted_per_dataset(tmp_path, register, caplog):
    boxes = [[1, 2, 10, 10], [float("nan"), 2, 10, 10], [1, 2, float("inf"), 3], [5, 5, 0, 4]]
    name = register(_coco(tmp_path, boxes), "unit_nan_boxes")
    with caplog.at_level(logging.WARNING):
        check_dataset_annotations(name, "dataloader.train.dataset.names", num_classes=3)
    assert "'unit_nan_boxes': 2 of 4 boxes have NaN/inf coordinates" in caplog.text
    assert "1 of 4 boxes have zero or negative width" in caplog.text


@pytest.mark.parametrize(
    "content, message",
    [
        ("", r"unit_broken\.json' is empty"),
        ("{not json", r"unit_broken\.json' is not valid JSON"),
        ("[]", r"unit_broken\.json' is not a COCO-format"),
    ],
)
def test_a_broken_annotation_file_is_named(register, content, message):
    name = register(content, "unit_broken")
    with pytest.raises(
        AnnotationError, match=rf"'unit_broken' \(dataloader\.test\.dataset\.names\).*{message}"
    ):
        check_dataset_annotations(name, "dataloader.test.dataset.names")


def test_more_categories_than_model_classes_is_refused(tmp_path, register):
    name = register(_coco(tmp_path, [[1, 2, 10, 10]], categories=("a", "b", "c")), "unit_three_classes")
    with pytest.raises(
        AnnotationError,
        match=r"3 categories \(a, b, c\).*model\.heads\.num_classes=2.*set model\.heads\.num_classes=3",
    ):
        check_dataset_annotations(name, "dataloader.train.dataset.names", num_classes=2)


def test_train_net_names_a_broken_json_before_building_the_model(tmp_path, monkeypatch):
    from detectron2.engine import default_argument_parser

    import train_net

    broken = tmp_path / "train.json"
    broken.write_text("{")
    monkeypatch.setattr(train_net, "instantiate", lambda *a, **k: pytest.fail("the model was built"))
    args = default_argument_parser().parse_args(
        [
            "--config-file",
            str(ROOT / "tests/configs/tiny_shapes.py"),
            f"train.output_dir={tmp_path / 'out'}",
            f"+datasets.coco_json=[{{name:unit_broken_train,json_file:{broken},image_root:{tmp_path}}}]",
            "dataloader.train.dataset.names=unit_broken_train",
        ]
    )
    try:
        with pytest.raises(AnnotationError, match=r"train\.json' is not valid JSON"):
            train_net.main(args)
    finally:
        DatasetCatalog.remove("unit_broken_train")
        MetadataCatalog.remove("unit_broken_train")


def test_more_model_classes_than_categories_is_refused_with_what_to_set(tmp_path, register):
    # DETR's habit: num_classes = max category id + 1 (here 8); the labels are contiguous indices 0..2
    coco = _coco(tmp_path, [[1, 2, 10, 10]], categories=("a", "b", "c"))
    coco["categories"] = [{"id": i, "name": n} for i, n in ((3, "a"), (5, "b"), (7, "c"))]
    coco["annotations"][0]["category_id"] = 7
    name = register(coco, "unit_sparse_ids")
    with pytest.raises(
        AnnotationError,
        match=r"3 categories \(a, b, c\).*model\.heads\.num_classes=8: set model\.heads\.num_classes=3.*"
        r"max category id \+ 1 does not apply",
    ):
        check_dataset_annotations(name, "dataloader.test.dataset.names", num_classes=8)
    (loaded,) = check_dataset_annotations(name, "dataloader.test.dataset.names", num_classes=3)
    assert [a["category_id"] for a in loaded[0]["annotations"]] == [2]
