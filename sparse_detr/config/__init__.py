"""Configuration: yacs defaults (``add_sparse_detr_config``) for ``build_model`` / ``DefaultPredictor``."""

from .defaults import add_sparse_detr_config

__all__ = ["add_sparse_detr_config"]
