"""Evaluation beside Detectron2's ``COCOEvaluator``: token statistics (Corr, refined tokens) of sparse
models."""
from .token_statistics import TokenStatisticsEvaluator, token_statistics

__all__ = ["TokenStatisticsEvaluator", "token_statistics"]
