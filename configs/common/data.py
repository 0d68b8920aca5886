"""COCO 2017 detection data with the DETR augmentations (Detectron2 builtin ``coco_2017_*`` datasets).

The files go under ``$DETECTRON2_DATASETS/coco/`` (``train2017/``, ``val2017/``, ``annotations/``). For
another COCO-format json, add ``datasets = dict(coco_json=[dict(name=..., json_file=..., image_root=...)])``
to a config and point ``dataloader.{train,test}.dataset.names`` at it (see ``sparse_detr.data.catalog``).
The dataset nodes register those entries and check the data against ``model.heads.num_classes`` when the
loader is built, so any trainer (``train_net.py``, Detectron2's ``tools/lazyconfig_train_net.py``) finds them.
"""
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader
from detectron2.evaluation import COCOEvaluator
from omegaconf import OmegaConf

from sparse_detr.data import (
    DetrDatasetMapper,
    build_detr_test_augmentations,
    build_detr_train_augmentations,
    build_resumable_train_loader,
)
from sparse_detr.data.catalog import detection_dataset_dicts
from sparse_detr.evaluation import TokenStatisticsEvaluator

dataloader = OmegaConf.create()


def _dataset(names: str) -> dict:
    # images without annotations are kept, like the official DETR loaders
    return L(detection_dataset_dicts)(
        names=names,
        filter_empty=False,
        coco_json="${oc.select:datasets.coco_json,null}",
        num_classes="${oc.select:model.heads.num_classes,null}",
    )


dataloader.train = L(build_resumable_train_loader)(
    dataset=_dataset("coco_2017_train"),
    mapper=L(DetrDatasetMapper)(
        is_train=True,
        augmentations=L(build_detr_train_augmentations)(
            min_sizes=[480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800],
            max_size=1333,
            crop_resize_sizes=[400, 500, 600],
            crop_size=[384, 600],
            crop_probability=0.5,
        ),
        image_format="${model.input_format}",
        skip_unreadable_images=False,
    ),
    total_batch_size=16,
    num_workers=4,
    seed="${train.seed}",
)

dataloader.test = L(build_detection_test_loader)(
    dataset=_dataset("coco_2017_val"),
    mapper=L(DetrDatasetMapper)(
        is_train=False,
        augmentations=L(build_detr_test_augmentations)(min_size=800, max_size=1333),
        image_format="${model.input_format}",
    ),
    num_workers=4,
)

dataloader.evaluator = [
    L(COCOEvaluator)(dataset_name="${dataloader.test.dataset.names}"),
    L(TokenStatisticsEvaluator)(),
]
