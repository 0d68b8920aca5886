"""Sparse DETR (Roh et al., ICLR 2022) as a Detectron2 plugin."""

__version__ = "0.1.0"
