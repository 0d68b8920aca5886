"""Dataset names: registration of COCO-format json files from a config, validation with clear errors, the
class names a tool shows.

COCO 2017 (``coco_2017_train`` / ``coco_2017_val``) is registered by Detectron2 itself on import, under
``$DETECTRON2_DATASETS/coco/{train2017,val2017,annotations/instances_*2017.json}``. Any other COCO-format
json is listed in the config's ``datasets.coco_json``::

    datasets = dict(coco_json=[dict(name="my_train", json_file="/data/train.json", image_root="/data/train")])
    dataloader.train.dataset.names = "my_train"

and registered (Detectron2's ``register_coco_instances``) by whatever uses the config:

- the dataset node of the project's loaders (:func:`detection_dataset_dicts`, ``configs/common/data.py``)
  registers the entries when the loader is instantiated, so Detectron2's own ``tools/lazyconfig_train_net.py``
  and ``tools/analyze_model.py`` find them, in every process;
- ``train_net.py`` and the tools of ``projects/SparseDETR`` and ``benchmarks`` call
  :func:`register_config_datasets` right after loading the config;
- an application calls ``register_config_datasets(cfg)`` (or ``register_coco_json_datasets([...])``) itself.
"""
from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Mapping

from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.build import filter_images_with_only_crowd_annotations, print_instances_class_histogram
from detectron2.data.datasets import register_coco_instances
from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES
from omegaconf import OmegaConf

from .annotation_checks import check_annotated_boxes, check_dataset_annotations
from .synthetic import SHAPES_PRESETS, default_datasets_root

__all__ = [
    "category_ids",
    "config_test_dataset",
    "check_dataset_names",
    "check_datasets_ahead",
    "class_names",
    "detection_dataset_dicts",
    "register_coco_json_datasets",
    "register_config_datasets",
]

OFFICIAL_COCO_LOGITS = 91  # the official models' class heads: one logit per COCO category id 0..90


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


def register_config_datasets(cfg) -> None:
    """Register the ``datasets.coco_json`` entries of a LazyConfig (nothing for a yacs config or none)."""
    if isinstance(cfg, CfgNode):
        return
    register_coco_json_datasets(OmegaConf.select(cfg, "datasets.coco_json", default=None) or [])


# datasets a script loaded and checked before building its model, for the next loader of the same names to
# take once: (names, num_classes) -> their AnnotationCounts (with the dicts)
_checked_ahead: dict[tuple[tuple[str, ...], int | None], list] = {}


def check_datasets_ahead(
    names: str | Iterable[str], config_key: str, num_classes: int | None, training: bool, keep: bool = False
) -> None:
    """Load and check ``names`` as :func:`detection_dataset_dicts` does, before a model is built (a broken
    file fails in seconds, not after the model is built or trained).

    ``training`` refuses a set without a box to learn from (else a warning). With ``keep``, the loaded dicts
    are handed to the next :func:`detection_dataset_dicts` of the same names and ``num_classes``, which then
    reads no annotation file and repeats no check or warning. Keep only what a loader is built from next:
    the dicts stay in memory until then.
    """
    names = tuple([names] if isinstance(names, str) else names)
    per_dataset = _load_and_check(names, config_key, num_classes, training)
    if keep:
        _checked_ahead[(names, num_classes)] = per_dataset


def _load_and_check(names, config_key: str, num_classes: int | None, training: bool) -> list:
    """Each dataset's AnnotationCounts (with its dicts), checked; ``training`` refuses a set without boxes."""
    per_dataset = check_dataset_annotations(names, config_key, num_classes)
    check_annotated_boxes(per_dataset, config_key, training=training)
    return per_dataset


def detection_dataset_dicts(
    names: str | Iterable[str],
    filter_empty: bool = True,
    coco_json: Iterable[Mapping] | None = None,
    num_classes: int | None = None,
) -> list[dict]:
    """The dataset node of a config's loader: register, check and load datasets for Detectron2's loaders.

    ``get_detection_dataset_dicts`` (names, ``filter_empty``) preceded by what a trainer must not skip: the
    ``coco_json`` entries are registered (the configs pass ``datasets.coco_json``), unknown names and missing
    files are named, and each dataset is checked (:func:`check_dataset_annotations`: a broken json named,
    dropped boxes counted, duplicate category ids, categories against ``num_classes``, the configs'
    ``model.heads.num_classes``; with ``filter_empty``, the training loaders' setting, a set without a box to
    learn from is refused) before any training step.

    Returns:
        the Detectron2 dataset dicts of all ``names``, concatenated.
    """
    names = [names] if isinstance(names, str) else list(names)
    config_key = "dataset.names"
    register_coco_json_datasets(coco_json or [])
    check_dataset_names(names, config_key)
    per_dataset = _checked_ahead.pop((tuple(names), num_classes), None)
    _checked_ahead.clear()  # what this loader does not take is held no longer
    if per_dataset is None:
        per_dataset = _load_and_check(names, config_key, num_classes, training=filter_empty)
    dicts = list(itertools.chain.from_iterable(counts.dicts for counts in per_dataset))
    if not dicts:
        raise ValueError(f"{config_key} {names}: the datasets hold no images")
    if filter_empty and "annotations" in dicts[0]:
        dicts = filter_images_with_only_crowd_annotations(dicts)
    classes = MetadataCatalog.get(names[0]).get("thing_classes")
    if classes and "annotations" in dicts[0]:
        print_instances_class_histogram(dicts, classes)
    return dicts


def class_names(cfg, num_classes: int) -> list[str]:
    """The names of a model's ``num_classes`` labels, for drawing and logging detections.

    The config's test dataset's ``thing_classes`` (its ``datasets.coco_json`` registered, its json read for
    the categories when needed); without them (a model-only config, a dataset with fewer classes) the COCO
    names of a converted official model (91 logits: label = COCO category id; 80: Detectron2's contiguous
    order), else the label numbers.
    """
    dataset = config_test_dataset(cfg)
    names = _thing_classes(dataset) if dataset else None
    if names and len(names) >= num_classes:
        return list(names)
    if num_classes == OFFICIAL_COCO_LOGITS:  # converted official model: label = COCO category id
        by_id = {c["id"]: c["name"] for c in COCO_CATEGORIES if c["isthing"]}
        return [by_id.get(i, str(i)) for i in range(num_classes)]
    coco_names = [c["name"] for c in COCO_CATEGORIES if c["isthing"]]
    if num_classes == len(coco_names):  # converted with --coco-contiguous (as sparse_detr://official/ does)
        return coco_names
    return [str(i) for i in range(num_classes)]


def category_ids(cfg, num_classes: int) -> list[int] | None:
    """The dataset category id of each of a model's ``num_classes`` labels, or None when nothing says.

    The config's test dataset's id mapping; without it the COCO ids of a converted official model (91 logits:
    label = category id; 80: Detectron2's contiguous order), as :func:`class_names` names them.
    """
    dataset = config_test_dataset(cfg)
    mapping = MetadataCatalog.get(dataset).get("thing_dataset_id_to_contiguous_id") if dataset else None
    if mapping and sorted(mapping.values()) == list(range(num_classes)):
        return [dataset_id for dataset_id, _ in sorted(mapping.items(), key=lambda item: item[1])]
    if num_classes == OFFICIAL_COCO_LOGITS:
        return list(range(num_classes))
    coco_ids = [c["id"] for c in COCO_CATEGORIES if c["isthing"]]
    return coco_ids if num_classes == len(coco_ids) else None


def config_test_dataset(cfg) -> str | None:
    """The first test dataset a yacs or LazyConfig names (its ``datasets.coco_json`` registered), or None."""
    register_config_datasets(cfg)
    if isinstance(cfg, CfgNode):
        return cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else None
    dataset = OmegaConf.select(cfg, "dataloader.test.dataset.names", default=None)
    return dataset[0] if isinstance(dataset, Iterable) and not isinstance(dataset, str) else dataset


def _thing_classes(dataset: str) -> list[str] | None:
    """``thing_classes`` of a dataset; a registered COCO json that has not been read yet is read for them."""
    metadata = MetadataCatalog.get(dataset)
    json_file = metadata.get("json_file")
    unread = metadata.get("thing_classes") is None and dataset in DatasetCatalog.list()
    if unread and json_file and "://" not in str(json_file) and os.path.isfile(json_file):
        DatasetCatalog.get(dataset)  # Detectron2's COCO loader sets thing_classes
    return metadata.get("thing_classes")


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
