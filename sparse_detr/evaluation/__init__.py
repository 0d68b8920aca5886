"""Evaluation beside Detectron2's ``COCOEvaluator``: token statistics (Corr, refined tokens) of sparse
models."""
from .token_statistics import (
    TokenStatisticsEvaluator,
    TokenStatisticsModel,
    token_statistics,
    with_token_statistics,
)

__all__ = ["TokenStatisticsEvaluator", "TokenStatisticsModel", "token_statistics", "with_token_statistics"]
