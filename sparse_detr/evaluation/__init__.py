"""Evaluation beside Detectron2's ``COCOEvaluator``: token statistics (Corr, refined tokens) of sparse
models."""
from .token_statistics import TokenStatisticsEvaluator

__all__ = ["TokenStatisticsEvaluator"]
