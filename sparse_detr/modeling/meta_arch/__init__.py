"""Meta-architectures (registered in Detectron2's META_ARCH_REGISTRY on import) and the model graph."""

from .graph import sparse_detr_graph
from .sparse_detr import SparseDETR

__all__ = ["SparseDETR", "sparse_detr_graph"]
