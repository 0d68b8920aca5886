"""Official-checkpoint conversion: an official release file -> a Detectron2 checkpoint + LazyConfig.

Official weights are used by name (``sparse_detr://official/<release stem>``); this package is what converts
them, and what ``projects/SparseDETR/convert_official.py`` runs on a file downloaded by hand.
"""

from .convert import convert_official_checkpoint

__all__ = ["convert_official_checkpoint"]
