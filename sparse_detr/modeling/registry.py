"""Registries of the Sparse DETR components (Detectron2 style: ``@REGISTRY.register()``)."""
from detectron2.utils.registry import Registry

SPARSE_ENCODER_REGISTRY = Registry("SPARSE_ENCODER")
SPARSE_ENCODER_REGISTRY.__doc__ = """Sparse deformable encoders: refine only the selected tokens."""

TOKEN_SCORER_REGISTRY = Registry("TOKEN_SCORER")
TOKEN_SCORER_REGISTRY.__doc__ = """Token scorers (``dam``, ``objectness``, ``random``) choosing the tokens."""

CRITERION_REGISTRY = Registry("SPARSE_DETR_CRITERION")
CRITERION_REGISTRY.__doc__ = """Training criteria: Hungarian losses of DETR heads plus the scorer loss."""
