"""Sparse DETR (Roh et al., ICLR 2022) as a Detectron2 plugin.

Importing the package registers its components: the ``SparseDETR`` meta-architecture, the Swin backbone, the
sparse encoder, token scorers and criterion (Detectron2 registries), the synthetic ``shapes_*`` datasets, and
the ``sparse_detr://official/<release file stem>`` weights on Detectron2's ``PathManager``.

    from sparse_detr import Predictor
    predictor = Predictor("sparse_detr_r50_rho0.1_50ep", weights="sparse_detr://official/sparse_detr_r50_10")
    outputs = predictor(image_bgr)   # {"instances": Instances}

Configs: :mod:`sparse_detr.model_zoo`; deployment: :mod:`sparse_detr.export`.
"""
from . import data, modeling  # noqa: F401  (registration by import side effect)
from ._version import __version__
from .engine.predictor import Predictor
from .model_zoo.official_weights import register_official_weights_handler

register_official_weights_handler()


__all__ = ["Predictor", "__version__"]
