"""Meta-architectures (registered in Detectron2's META_ARCH_REGISTRY on import) and the model graph."""

from .graph import graph_from_yacs, scorer_node, sparse_detr_graph
from .sparse_detr import SparseDETR

__all__ = ["SparseDETR", "graph_from_yacs", "scorer_node", "sparse_detr_graph"]
