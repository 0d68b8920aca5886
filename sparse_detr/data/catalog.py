"""Dataset names: validation with clear errors, and registration of COCO-format json files from a config.

COCO 2017 (``coco_2017_train`` / ``coco_2017_val``) is registered by Detectron2 itself on import, under
``$DETECTRON2_DATASETS/coco/{train2017,val2017,annotations/instances_*2017.json}``. Any other COCO-format
json is registered with Detectron2's ``register_coco_instances``; from a config, list it in
``cfg.datasets.coco_json`` and ``train_net.py`` registers it in every process::

    datasets = dict(coco_json=[dict(name="my_train", json_file="/data/train.json", image_root="/data/train")])
    dataloader.train.dataset.names = "my_train"
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances

from .synthetic import SHAPES_PRESETS, default_datasets_root

__all__ = ["check_dataset_names", "register_coco_json_datasets"]


def register_coco_json_datasets(entries: Iterable[Mapping]) -> None:
    """Register COCO-format datasets: each entry has ``name``, ``json_file``, ``image_root``
    (and optionally ``metadata``, a dict). Names already registered with the same files are skipped."""
    for position, entry in enumerate(entries):
        missing = {"name", "json_file", "image_root"} - set(entry)
        if missing:
            raise ValueError(f"datasets.coco_json[{position}] lacks the key(s) {sorted(missing)}")
        name = entry["name"]
        if name in DatasetCatalog.list():
            if MetadataCatalog.get(name).get("json_file") == entry["json_file"]:
                continue
            raise ValueError(f"datasets.coco_json[{position}]: dataset name {name!r} is already registered")
        metadata = dict(entry.get("metadata", {}))
        register_coco_instances(name, metadata, entry["json_file"], entry["image_root"])


def check_dataset_names(names: str | Iterable[str], config_key: str) -> None:
    """Fail with a clear message if a dataset is unknown or its annotation file is missing."""
    names = [names] if isinstance(names, str) else list(names)
    registered = set(DatasetCatalog.list())
    for name in names:
        if name not in registered:
            suggestions = sorted(n for n in registered if n.startswith(("shapes_", "coco_2017")))
            raise KeyError(
                f"Unknown dataset {name!r} in {config_key}. Known here: {', '.join(suggestions)} "
                "(and the other Detectron2 builtins). Register a COCO-format json in the config's "
                "datasets.coco_json (see sparse_detr.data.catalog) or with "
                "detectron2.data.datasets.register_coco_instances."
            )
        if name in SHAPES_PRESETS:
            continue  # generated on first use
        json_file = MetadataCatalog.get(name).get("json_file")
        if json_file and "://" not in str(json_file) and not os.path.isfile(json_file):
            raise FileNotFoundError(
                f"Dataset {name!r} ({config_key}) is registered, but its annotation file {json_file!r} "
                "does not exist. Builtin datasets live under DETECTRON2_DATASETS "
                f"(now {default_datasets_root()!r}), e.g. coco/annotations/instances_train2017.json and "
                "coco/train2017/ for coco_2017_train."
            )
