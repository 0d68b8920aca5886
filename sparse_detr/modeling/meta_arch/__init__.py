"""Meta-architectures (registered in Detectron2's META_ARCH_REGISTRY on import)."""

from .sparse_detr import SparseDETR

__all__ = ["SparseDETR"]
