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
    (counts,) = check_dataset_annotations(name, "dataloader.test.dataset.names", num_classes=3)
    assert [a["category_id"] for a in counts.dicts[0]["annotations"]] == [2]


def test_boxes_entirely_outside_their_image_are_counted(tmp_path, register, caplog):
    # the image is 60 x 40: beyond the right / bottom edge, at negative coordinates, straddling (kept)
    boxes = [[1, 2, 10, 10], [60, 5, 8, 8], [70, 50, 5, 5], [-20, -30, 10, 10], [-5, 30, 20, 20]]
    name = register(_coco(tmp_path, boxes), "unit_outside_boxes")
    with caplog.at_level(logging.WARNING):
        (counts,) = check_dataset_annotations(name, "dataloader.train.dataset.names", num_classes=3)
    assert "'unit_outside_boxes': 3 of 5 boxes lie entirely outside their image" in caplog.text
    assert (counts.num_boxes, counts.num_dropped, counts.num_trainable) == (5, 3, 2)


def _train_net_args(tmp_path, *opts):
    from detectron2.engine import default_argument_parser

    options = [o for o in opts if o.startswith("--")]  # options first, overrides last
    overrides = [o for o in opts if not o.startswith("--")]
    return default_argument_parser().parse_args(
        ["--config-file", str(ROOT / "tests/configs/tiny_shapes.py"), *options,
         f"train.output_dir={tmp_path / 'out'}", *overrides]
    )


@pytest.mark.parametrize(
    "boxes", [[], [[70, 50, 5, 5], [float("nan"), 1, 2, 2]]], ids=["no annotations", "every box dropped"]
)
def test_a_training_set_without_a_box_to_learn_is_refused_before_training(tmp_path, register, boxes,
                                                                         monkeypatch):
    import train_net

    name = register(_coco(tmp_path, boxes), "unit_no_boxes")
    monkeypatch.setattr(train_net, "instantiate", lambda *a, **k: pytest.fail("the model was built"))
    args = _train_net_args(tmp_path, f"dataloader.train.dataset.names={name}", "model.heads.num_classes=3")
    with pytest.raises(AnnotationError, match=r"dataloader\.train\.dataset\.names\) holds no box to learn.*"
                       r"'unit_no_boxes': 1 images.*AP nan"):
        train_net.main(args)


def test_a_test_set_without_boxes_is_announced(tmp_path, register, caplog):
    from sparse_detr.data.annotation_checks import check_annotated_boxes

    name = register(_coco(tmp_path, []), "unit_no_test_boxes")
    counts = check_dataset_annotations(name, "dataloader.test.dataset.names")
    with caplog.at_level(logging.WARNING):
        check_annotated_boxes(counts, "dataloader.test.dataset.names", training=False)
    assert "holds no annotated box" in caplog.text and "AP will be nan" in caplog.text


@pytest.mark.parametrize("split", ["train", "test"])
def test_duplicate_category_ids_are_refused_up_front(tmp_path, register, split):
    content = _coco(tmp_path, [[1, 2, 10, 10]], categories=("a", "b", "c", "d"))
    content["categories"][2]["id"] = 2  # ids 1, 2, 2, 4
    name = register(content, f"unit_duplicate_ids_{split}")
    with pytest.raises(AnnotationError, match=rf"'{name}' \(dataloader\.{split}\.dataset\.names\).*"
                       r"lists category id\(s\) \[2\] more than once \(4 categories, 3 distinct ids\)"):
        check_dataset_annotations(name, f"dataloader.{split}.dataset.names", num_classes=10)


def test_eval_only_reads_the_test_sets_only(tmp_path, register, stand_in_weights):
    """--eval-only evaluates with the training annotations absent (only the test set installed)."""
    import train_net

    config = str(ROOT / "tests/configs/tiny_shapes.py")
    test_set = register(_coco(tmp_path, [[1, 2, 10, 10]], categories="abcde"), "unit_eval_only_val")
    args = _train_net_args(
        tmp_path,
        "--eval-only",
        f"train.init_checkpoint={stand_in_weights(config)}",
        f"+datasets.coco_json=[{{name:unit_absent_train,json_file:{tmp_path / 'absent.json'},"
        f"image_root:{tmp_path}}}]",
        "dataloader.train.dataset.names=unit_absent_train",
        f"dataloader.test.dataset.names={test_set}",
    )
    try:
        results = train_net.main(args)
    finally:
        DatasetCatalog.remove("unit_absent_train")
        MetadataCatalog.remove("unit_absent_train")
    assert "bbox" in results
    # training still names the missing file
    with pytest.raises(FileNotFoundError, match="absent.json"):
        train_net.main(_train_net_args(
            tmp_path,
            f"+datasets.coco_json=[{{name:unit_absent_train,json_file:{tmp_path / 'absent.json'},"
            f"image_root:{tmp_path}}}]",
            "dataloader.train.dataset.names=unit_absent_train",
        ))
    DatasetCatalog.remove("unit_absent_train")
    MetadataCatalog.remove("unit_absent_train")
