import json
import os
from pathlib import Path

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog

from sparse_detr.data.synthetic import (
    SHAPE_CLASSES,
    SHAPES_PRESETS,
    ShapesSpec,
    ensure_shapes_dataset,
    register_shapes_dataset,
    render_shapes_image,
)

SPEC = ShapesSpec(split="unit", num_images=12, seed=5, image_size=64, max_objects=4, min_object_size=12,
                  max_object_size=32, empty_image_fraction=0.25)


def test_rendering_is_deterministic_and_seeded():
    image_a, annotations_a = render_shapes_image(SPEC, 3)
    image_b, annotations_b = render_shapes_image(SPEC, 3)
    np.testing.assert_array_equal(image_a, image_b)
    assert annotations_a == annotations_b
    other, _ = render_shapes_image(ShapesSpec(**{**SPEC.__dict__, "seed": 6}), 3)
    assert not np.array_equal(image_a, other)


def test_annotations_are_valid_coco_boxes():
    num_boxes, empty = 0, 0
    for index in range(40):
        image, annotations = render_shapes_image(SPEC, index)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        empty += not annotations
        for annotation in annotations:
            x, y, w, h = annotation["bbox"]
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 64 and y + h <= 64
            assert 0 < annotation["area"] <= w * h
            assert 1 <= annotation["category_id"] <= len(SHAPE_CLASSES)
            assert annotation["iscrowd"] == 0
            num_boxes += 1
    assert num_boxes > 40
    assert 0 < empty < 40  # some images have no object


def test_shapes_contrast_with_the_background():
    def single_inner_object(index):
        image, annotations = render_shapes_image(SPEC, index)
        if len(annotations) != 1:
            return None
        x, y, w, h = (int(v) for v in annotations[0]["bbox"])
        return (image, (x, y, w, h)) if x > 0 and y > 0 and x + w < 64 and y + h < 64 else None

    image, (x, y, w, h) = next(r for r in map(single_inner_object, range(100)) if r is not None)
    centre = image[y + h // 2, x + w // 2].astype(float)  # all shapes cover their box centre
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).astype(float)
    assert np.linalg.norm(centre - np.median(border, axis=0)) > 50


def test_ensure_writes_once_and_regenerates_on_spec_change(tmp_path):
    json_file, image_root = ensure_shapes_dataset(SPEC, str(tmp_path))
    coco = json.loads(Path(json_file).read_text())
    assert len(coco["images"]) == SPEC.num_images
    assert [c["name"] for c in coco["categories"]] == list(SHAPE_CLASSES)
    assert sorted(os.listdir(image_root)) == [f"{i:06d}.jpg" for i in range(SPEC.num_images)]
    stamp = os.path.getmtime(json_file)
    assert ensure_shapes_dataset(SPEC, str(tmp_path)) == (json_file, image_root)
    assert os.path.getmtime(json_file) == stamp  # matching files are reused

    os.remove(os.path.join(image_root, "000004.jpg"))  # an incomplete set is regenerated
    ensure_shapes_dataset(SPEC, str(tmp_path))
    assert os.path.isfile(os.path.join(image_root, "000004.jpg"))

    smaller = ShapesSpec(**{**SPEC.__dict__, "num_images": 5})
    ensure_shapes_dataset(smaller, str(tmp_path))
    assert len(json.loads(Path(json_file).read_text())["images"]) == 5
    assert len(os.listdir(image_root)) == 5


def test_registered_set_is_generated_on_first_use(tmp_path):
    name = "shapes_unit_test_registration"
    register_shapes_dataset(name, SPEC, str(tmp_path))
    try:
        metadata = MetadataCatalog.get(name)
        assert metadata.evaluator_type == "coco" and list(metadata.thing_classes) == list(SHAPE_CLASSES)
        assert not os.path.exists(metadata.json_file)
        dicts = DatasetCatalog.get(name)
        assert len(dicts) == SPEC.num_images and os.path.isfile(metadata.json_file)
        assert all(0 <= a["category_id"] < len(SHAPE_CLASSES) for d in dicts for a in d["annotations"])
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_presets_are_registered():
    for name in ("shapes_train", "shapes_val", "shapes_tiny_train", "shapes_tiny_val"):
        assert name in DatasetCatalog.list() and name in SHAPES_PRESETS


def test_bad_spec_is_rejected():
    with pytest.raises(ValueError, match="min_object_size"):
        ShapesSpec(split="x", num_images=1, seed=0, image_size=32, min_object_size=40, max_object_size=50)
    with pytest.raises(ValueError, match="num_images"):
        ShapesSpec(split="x", num_images=0, seed=0)
