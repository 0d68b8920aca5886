"""Sparse DETR (Roh et al., ICLR 2022) as a Detectron2 plugin.

Importing the package registers its components: the ``SparseDETR`` meta-architecture, the Swin backbone, the
sparse encoder, token scorers and criterion (Detectron2 registries), and the synthetic ``shapes_*`` datasets.
"""
from . import data, modeling  # noqa: F401  (registration by import side effect)
from .config import add_sparse_detr_config

__version__ = "0.1.0"

__all__ = ["add_sparse_detr_config", "__version__"]
