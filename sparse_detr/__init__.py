"""Sparse DETR (Roh et al., ICLR 2022) as a Detectron2 plugin.

Importing the package registers its components: the ``SparseDETR`` meta-architecture, the Swin backbone, the
sparse encoder, token scorers and criterion (Detectron2 registries), the synthetic ``shapes_*`` datasets, and
the ``sparse_detr://official/<release file stem>`` weights on Detectron2's ``PathManager``.

Deployment: ``sparse_detr.export.export_model`` writes a built model as one function of one image with
dynamic size (ONNX, OpenVINO IR, torch.export) and ``sparse_detr.export.load_exported`` opens it.
"""
from . import data, modeling  # noqa: F401  (registration by import side effect)
from ._version import __version__
from .config import add_sparse_detr_config
from .model_zoo.official_weights import register_official_weights_handler

register_official_weights_handler()


__all__ = [
    "add_sparse_detr_config",
    "__version__",
]
