"""Sparse DETR model components; importing this package registers them in their registries."""

from . import backbone, criterion, encoder, scorers  # noqa: F401  (registers the components)
from .meta_arch import SparseDETR, sparse_detr_graph
from .outputs import SparseDETROutput
from .registry import CRITERION_REGISTRY, SPARSE_ENCODER_REGISTRY, TOKEN_SCORER_REGISTRY
from .scorers import TokenScorer

__all__ = [
    "CRITERION_REGISTRY",
    "SPARSE_ENCODER_REGISTRY",
    "SparseDETR",
    "SparseDETROutput",
    "TOKEN_SCORER_REGISTRY",
    "TokenScorer",
    "sparse_detr_graph",
]
