import logging

import numpy as np
import pytest
import torch
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from PIL import Image

from sparse_detr.data import DetrDatasetMapper, build_detr_test_augmentations, build_detr_train_augmentations
from sparse_detr.data.augmentations import RandomChoice
from sparse_detr.data.dataset_mapper import UnreadableImageError


def _annotation(bbox, category_id=0, iscrowd=0):
    return {"bbox": bbox, "bbox_mode": BoxMode.XYWH_ABS, "category_id": category_id, "iscrowd": iscrowd}


@pytest.fixture
def image_file(tmp_path):
    path = tmp_path / "image.png"
    pixels = np.zeros((40, 60, 3), dtype=np.uint8)
    pixels[..., 0] = 200  # red in RGB
    Image.fromarray(pixels).save(path)
    return str(path)


def _record(file_name, annotations):
    return {"file_name": file_name, "height": 40, "width": 60, "image_id": 1, "annotations": annotations}


def test_training_targets_drop_crowd_and_degenerate_boxes(image_file):
    mapper = DetrDatasetMapper(is_train=True, augmentations=[], image_format="RGB")
    record = _record(image_file, [
        _annotation([10, 5, 20, 10], category_id=2),
        _annotation([0, 0, 30, 30], category_id=1, iscrowd=1),  # crowd
        _annotation([5, 5, 0, 10]),  # zero width
        _annotation([5, 5, 10, -3]),  # negative height
        _annotation([5, float("nan"), 10, 10]),  # not finite
    ])
    out = mapper(record)
    assert out["image"].shape == (3, 40, 60) and out["image"].dtype == torch.uint8
    assert out["image"][0].float().mean() == 200 and out["image"][2].float().mean() == 0  # RGB order kept
    assert out["instances"].gt_classes.tolist() == [2]
    assert out["instances"].gt_boxes.tensor.tolist() == [[10.0, 5.0, 30.0, 15.0]]
    assert out["height"] == 40 and out["width"] == 60
    assert len(record["annotations"]) == 5  # the input record is not modified


def test_images_without_boxes_are_kept(image_file):
    mapper = DetrDatasetMapper(is_train=True, augmentations=[], image_format="BGR")
    out = mapper(_record(image_file, []))
    assert len(out["instances"]) == 0
    assert out["image"][2].float().mean() == 200  # BGR: red is the last channel


def test_boxes_follow_the_flip_and_crop_empties_are_removed(image_file):
    mapper = DetrDatasetMapper(
        is_train=True,
        augmentations=[T.RandomFlip(prob=1.0), T.CropTransform(0, 0, 40, 40)],
        image_format="RGB",
    )
    out = mapper(_record(image_file, [_annotation([10, 5, 20, 10], 3), _annotation([2, 2, 6, 6], 4)]))
    # flipped: x -> 60 - x; the first box becomes [30, 5, 50, 15], cropped to width 40 -> [30, 5, 40, 15];
    # the second becomes [52, 2, 58, 8], entirely outside the crop -> removed
    assert out["instances"].gt_classes.tolist() == [3]
    assert out["instances"].gt_boxes.tensor.tolist() == [[30.0, 5.0, 40.0, 15.0]]


def test_test_mode_has_no_instances(image_file):
    mapper = DetrDatasetMapper(is_train=False, augmentations=build_detr_test_augmentations(80, 200))
    out = mapper(_record(image_file, [_annotation([10, 5, 20, 10])]))
    assert "instances" not in out and "annotations" not in out
    assert out["image"].shape == (3, 80, 120)


def test_missing_image_is_named(tmp_path):
    mapper = DetrDatasetMapper(is_train=True, augmentations=[])
    missing = str(tmp_path / "missing.jpg")
    with pytest.raises(UnreadableImageError, match="missing.jpg"):
        mapper(_record(missing, []))


def test_corrupt_image_is_named_or_skipped(tmp_path, caplog):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8 this is not a jpeg")
    with pytest.raises(UnreadableImageError, match="corrupt.jpg"):
        DetrDatasetMapper(is_train=True, augmentations=[])(_record(str(corrupt), []))
    skipping = DetrDatasetMapper(is_train=True, augmentations=[], skip_unreadable_images=True)
    with caplog.at_level(logging.WARNING):
        assert skipping(_record(str(corrupt), [])) is None
    assert "corrupt.jpg" in caplog.text
    # never skipped at test time: that would silently change the evaluation
    with pytest.raises(UnreadableImageError):
        test_mapper = DetrDatasetMapper(is_train=False, augmentations=[], skip_unreadable_images=True)
        test_mapper(_record(str(corrupt), []))


def test_train_augmentations_sizes():
    min_sizes, max_size = (96, 112, 128), 160
    augmentations = T.AugmentationList(
        build_detr_train_augmentations(min_sizes, max_size, crop_resize_sizes=(80, 100), crop_size=(48, 90))
    )
    np.random.seed(0)
    shapes = set()
    for _ in range(60):
        aug_input = T.AugInput(np.zeros((100, 150, 3), dtype=np.uint8))
        augmentations(aug_input)
        h, w = aug_input.image.shape[:2]
        shapes.add((h, w))
        # both branches end with the multi-scale resize: shorter side in min_sizes unless capped by max_size
        assert min(h, w) in min_sizes or max(h, w) == max_size
        assert max(h, w) <= max_size
    aspect_ratios = {round(w / h, 2) for h, w in shapes}
    assert len(aspect_ratios) > 2  # the crop branch changes the aspect ratio


def test_random_choice_validates_probabilities():
    with pytest.raises(ValueError, match="probabilities"):
        RandomChoice([T.RandomFlip(), T.RandomFlip()], probabilities=[0.3, 0.3])
    choice = RandomChoice([T.RandomFlip(prob=1.0), T.NoOpTransform()], probabilities=[1.0, 0.0])
    aug_input = T.AugInput(np.arange(6, dtype=np.uint8).reshape(1, 6, 1).repeat(3, 2))
    choice(aug_input)
    assert aug_input.image[0, :, 0].tolist() == [5, 4, 3, 2, 1, 0]


@pytest.mark.parametrize("is_train", [True, False])
def test_extreme_aspect_ratio_is_named_and_skipped_where_asked(tmp_path, is_train):
    path = tmp_path / "strip.png"
    Image.fromarray(np.zeros((2, 700, 3), dtype=np.uint8)).save(path)
    record = {"file_name": str(path), "height": 2, "width": 700, "image_id": 1, "annotations": []}
    augmentations = build_detr_test_augmentations(min_size=64, max_size=96)
    mapper = DetrDatasetMapper(is_train=is_train, augmentations=augmentations, image_format="RGB")
    with pytest.raises(UnreadableImageError, match=r"strip\.png.*2 x 700 pixels.*350:1"):
        mapper(record)
    skipping = DetrDatasetMapper(
        is_train=is_train, augmentations=augmentations, image_format="RGB", skip_unreadable_images=True
    )
    if is_train:
        assert skipping(record) is None
    else:  # never skipped at test time: the evaluation would change silently
        with pytest.raises(UnreadableImageError, match="strip.png"):
            skipping(record)


def test_16_bit_training_image_keeps_its_range(tmp_path):
    path = tmp_path / "gray16.png"
    Image.fromarray(np.full((40, 60), 32896, dtype=np.uint16)).save(path)  # mid-grey in 16 bits
    mapper = DetrDatasetMapper(is_train=True, augmentations=[], image_format="RGB")
    image = mapper(_record(str(path), []))["image"]
    assert image.dtype == torch.uint8 and int(image.max()) == 128


def test_unknown_image_format_is_refused():
    with pytest.raises(ValueError, match=r"image_format.*'YUV'"):
        DetrDatasetMapper(is_train=True, augmentations=[], image_format="YUV")
