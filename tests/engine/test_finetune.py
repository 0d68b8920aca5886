"""Fine-tuning on one's own COCO-format data: the epoch schedule, the dataset summary, loading a checkpoint
with another number of classes, and train_net.py fine-tuning a 5-class shapes model onto a 2-class set."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate

from sparse_detr.data.synthetic import SHAPES_PRESETS, ensure_shapes_dataset
from sparse_detr.engine import AtomicDetectionCheckpointer
from sparse_detr.engine.finetune import coco_json_summary, finetune_schedule

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "tests/configs/tiny_shapes.py")


def test_schedule_follows_the_dataset_size_and_batch():
    schedule = finetune_schedule(num_images=100, total_batch_size=8, epochs=10)
    assert schedule.iterations_per_epoch == 13  # ceil(100 / 8)
    assert schedule.max_iter == 130
    assert schedule.lr_multiplier.milestones == [104]  # lr / 10 after epoch 8 (80 %)
    assert schedule.eval_period == schedule.checkpoint_period == 13
    custom = finetune_schedule(1000, 16, epochs=12, drop_epochs=[8, 11], eval_every_epochs=2,
                               checkpoint_every_epochs=0.5)
    assert (custom.max_iter, custom.lr_multiplier.milestones) == (756, [504, 693])
    assert list(custom.lr_multiplier["values"]) == pytest.approx([1.0, 0.1, 0.01])
    assert (custom.eval_period, custom.checkpoint_period) == (126, 32)
    with pytest.raises(ValueError, match="eval_every_epochs must be a finite number of epochs > 0"):
        finetune_schedule(100, 8, epochs=1, eval_every_epochs=0)


def test_coco_json_summary(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({
        "images": [{"id": i, "file_name": f"{i}.jpg", "height": 9, "width": 9} for i in range(7)],
        "annotations": [],
        "categories": [{"id": 9, "name": "b"}, {"id": 2, "name": "a"}],
    }))
    summary = coco_json_summary(str(path))
    assert (summary.num_images, summary.num_classes, summary.class_names) == (7, 2, ("a", "b"))
    with pytest.raises(FileNotFoundError, match="missing.json"):
        coco_json_summary(str(tmp_path / "missing.json"))


_IMAGES = [{"id": 1, "file_name": "1.jpg", "height": 9, "width": 9}]


@pytest.mark.parametrize(
    "content, problem",
    [
        ("", r"the annotation file is empty \(0 bytes\)"),
        ("{\"images\": [", r"not a valid JSON file \(Expecting value: line 1"),
        ("[1, 2]", r"a COCO-format detection json is an object .*this one holds a list"),
        (json.dumps({"images": _IMAGES}), r"not a COCO-format detection json \(no \['categories'\]"),
        (json.dumps({"images": [], "categories": [{"id": 1, "name": "a"}]}), r"0 images and 1 categories"),
        (json.dumps({"images": _IMAGES, "categories": [{"name": "a"}]}), r"every category needs an 'id'"),
        (
            json.dumps({"images": _IMAGES, "categories": [{"id": 3, "name": "a"}, {"id": 3, "name": "b"}]}),
            r"category ids listed more than once \(id 3: \['a', 'b'\]\)",
        ),
    ],
    ids=["empty", "truncated", "a list", "no categories", "no images", "category without id", "duplicate id"],
)
def test_coco_json_summary_names_the_file_and_its_problem(tmp_path, content, problem):
    path = tmp_path / "mine.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=rf"mine\.json: {problem}"):
        coco_json_summary(str(path))


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"epochs": 0}, r"epochs must be a finite number of epochs > 0, got 0"),
        ({"epochs": -2}, r"epochs must be .* got -2"),
        ({"epochs": float("nan")}, r"epochs must be .* got nan"),
        ({"epochs": 12, "eval_every_epochs": float("inf")}, r"eval_every_epochs must be .* got inf"),
        ({"epochs": 12, "num_images": 0}, r"num_images must be a whole number >= 1, got 0"),
        ({"epochs": 12, "total_batch_size": 2.5}, r"total_batch_size must be a whole number >= 1"),
        # 10 images at batch 16: 1 iteration per epoch; 1 and 2 epochs are 1 and 2 iterations
        ({"epochs": 1}, r"epochs=1 at 1 iteration\(s\) per epoch = ceil\(num_images 10 / total_batch_size "
                        r"16\) rounds to 1 iteration\(s\).*at least 3"),
        ({"epochs": 2}, r"rounds to 2 iteration\(s\)"),
        ({"epochs": 4, "drop_epochs": [3, 3.2]}, r"drop_epochs=\[3, 3.2\] fall on iterations \[3, 3\]"),
        ({"epochs": 4, "drop_epochs": [5]}, r"fall on iterations \[5\].*between 0 and max_iter 4"),
    ],
)
def test_finetune_schedule_names_the_argument_and_explains(arguments, message):
    with pytest.raises(ValueError, match=rf"finetune_schedule: (.*){message}"):
        finetune_schedule(**{"num_images": 10, "total_batch_size": 16, **arguments})
    assert finetune_schedule(10, 16, epochs=3).max_iter == 3  # the shortest schedule accepted


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_checkpoint_with_other_classes_reinitialises_the_class_heads_and_logs_each_key_once(tmp_path):
    five = instantiate(LazyConfig.load(TINY).model)
    path = tmp_path / "five.pth"
    torch.save({"model": five.state_dict()}, path)
    cfg = LazyConfig.apply_overrides(LazyConfig.load(TINY), ["model.heads.num_classes=2"])
    torch.manual_seed(1)
    two = instantiate(cfg.model)
    initial = {k: v.clone() for k, v in two.state_dict().items()}

    records = _Records()
    checkpoint_logger = logging.getLogger("fvcore.common.checkpoint")
    checkpoint_logger.addHandler(records)
    try:
        AtomicDetectionCheckpointer(two).load(str(path))
    finally:
        checkpoint_logger.removeHandler(records)

    class_keys = sorted(k for k in initial if "class_heads" in k)
    assert class_keys and all(initial[k].shape[0] == 2 for k in class_keys)
    loaded = two.state_dict()
    for key, value in five.state_dict().items():
        if key in class_keys:
            assert torch.equal(loaded[key], initial[key]), key  # kept its initialisation
        else:
            assert torch.equal(loaded[key], value), key  # everything else comes from the checkpoint
    log = "\n".join(records.messages)
    assert f"{len(class_keys)} tensor(s) keep their initialisation" in log
    for key in class_keys:
        assert len(re.findall(rf"\b{re.escape(key)}\b", log)) == 1, key
    assert "not found in the checkpoint" not in log


def _relabel(json_file: str, output: Path) -> None:
    """The shapes annotations with another class set: round (circle) vs angular (the other four)."""
    data = json.loads(Path(json_file).read_text())
    circle = next(c["id"] for c in data["categories"] if c["name"] == "circle")
    for annotation in data["annotations"]:
        annotation["category_id"] = 1 if annotation["category_id"] == circle else 2
    data["categories"] = [{"id": 1, "name": "round"}, {"id": 2, "name": "angular"}]
    output.write_text(json.dumps(data))


FINETUNE_CONFIG = """\
from detectron2.config import LazyConfig

from sparse_detr.engine.finetune import coco_json_summary, finetune_schedule

_base = LazyConfig.load({tiny!r})
model, dataloader, optimizer, train = _base.model, _base.dataloader, _base.optimizer, _base.train

datasets = dict(coco_json=[
    dict(name="two_class_train", json_file={train_json!r}, image_root={train_images!r}),
    dict(name="two_class_val", json_file={val_json!r}, image_root={val_images!r}),
])
dataloader.train.dataset.names = "two_class_train"
dataloader.test.dataset.names = "two_class_val"
dataloader.train.total_batch_size = 4
_train_set = coco_json_summary({train_json!r})
model.heads.num_classes = _train_set.num_classes

_schedule = finetune_schedule(_train_set.num_images, dataloader.train.total_batch_size, epochs=2)
train.max_iter, lr_multiplier = _schedule.max_iter, _schedule.lr_multiplier
train.eval_period, train.checkpointer.period = _schedule.eval_period, _schedule.checkpoint_period
train.init_checkpoint = {init!r}
train.output_dir = {output!r}
"""


@pytest.mark.slow
def test_train_net_fine_tunes_a_five_class_model_onto_two_classes(tmp_path):
    env = {**os.environ, "DETECTRON2_DATASETS": str(tmp_path / "datasets"), "OMP_NUM_THREADS": "1"}

    def train_net(*args: str) -> None:
        result = subprocess.run([sys.executable, "train_net.py", *args], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"

    # 1. a model of the five shape classes
    pretrained = tmp_path / "five_classes"
    train_net("--config-file", TINY, "train.max_iter=2", f"train.output_dir={pretrained}")
    # 2. the same images with two classes, as one's own COCO-format data
    splits = {}
    for split in ("train", "val"):
        json_file, image_root = ensure_shapes_dataset(SHAPES_PRESETS[f"shapes_tiny_{split}"],
                                                      str(tmp_path / "datasets"))
        relabelled = tmp_path / f"two_classes_{split}.json"
        _relabel(json_file, relabelled)
        splits[split] = (str(relabelled), image_root)
    config = tmp_path / "finetune_two_classes.py"
    output = tmp_path / "finetuned"
    config.write_text(FINETUNE_CONFIG.format(
        tiny=TINY, train_json=splits["train"][0], train_images=splits["train"][1], val_json=splits["val"][0],
        val_images=splits["val"][1], init=str(pretrained / "model_final.pth"), output=str(output),
    ))
    train_net("--config-file", str(config))

    # 16 training images at 4 per iteration: 4 iterations per epoch, 2 epochs, lr drop after 80 %
    saved = LazyConfig.load(str(output / "config.yaml"))
    assert saved.train.max_iter == 8 and list(saved.lr_multiplier.milestones) == [6]
    assert saved.train.eval_period == saved.train.checkpointer.period == 4
    rows = [json.loads(line) for line in (output / "metrics.json").read_text().splitlines()]
    assert sorted({r["iteration"] for r in rows if "total_loss" in r}) == list(range(8))
    assert sum("bbox/AP" in r for r in rows) == 2  # evaluated after each epoch
    assert (output / "model_0000003.pth").is_file() and (output / "model_final.pth").is_file()
    weights = torch.load(output / "model_final.pth", weights_only=False)["model"]
    assert weights["heads.class_heads.0.weight"].shape[0] == 2
    assert json.loads((output / "final_metrics.json").read_text())["bbox"].keys() >= {"AP", "AP-round"}

    log = (output / "log.txt").read_text()
    class_keys = sorted(k for k in weights if "class_heads" in k)
    assert f"{len(class_keys)} tensor(s) keep their initialisation" in log
    assert all(len(re.findall(rf"\b{re.escape(key)}\b", log)) == 1 for key in class_keys)
    assert "not found in the checkpoint" not in log
